"""The tiled fit: a large frame inspected as overlapping tiles at model resolution, so a small defect keeps its
pixels instead of being shrunk into the square input with the rest of the frame.

A ``TileGrid`` (rows × cols, overlap) travels with the model like the fit mode: in the checkpoint, the graph's
metadata and the bundle. Every frame, whatever its size, is cut into the same grid of equal tiles (each tile's side
is the frame's side over ``n − (n − 1)·overlap``, the first tile at the frame's start, the last at its end, the
others evenly between); each tile is fitted to the model input with the model's fit mode; the tiles of one or more
frames are inferred as one batch. The frame's map puts each tile's map back where the tile came from
(``unfit_map``) and keeps the largest value where tiles overlap; the frame's score is the largest of its tiles'
scores (each the graph's own image score), so thresholds calibrated on held-out good frames the same way mean the
same on every backend. Torch-free (the runtime uses it).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge_stpm.common.errors import UserError
from edge_stpm.common.images import fit_image, unfit_map

MAX_SIDE = 8  # tiles per side: 64 tiles a frame at most
MAX_OVERLAP = 0.5
_SPEC = re.compile(r"^\s*(\d+)\s*[xX×]\s*(\d+)\s*$")


def _axis(length: int, n: int, overlap: float) -> list[tuple[int, int]]:
    """``n`` windows (start, size) of one size covering ``0..length``: first at 0, last at the end."""
    if n == 1:
        return [(0, length)]
    size = min(length, math.ceil(length / (n - (n - 1) * overlap)))
    return [(round(i * (length - size) / (n - 1)), size) for i in range(n)]


@dataclass(frozen=True)
class TileGrid:
    rows: int
    cols: int
    overlap: float = 0.125

    def __post_init__(self) -> None:
        if not (1 <= self.rows <= MAX_SIDE and 1 <= self.cols <= MAX_SIDE):
            raise UserError(f"--tiles {self.rows}x{self.cols}: each side must be 1..{MAX_SIDE}")
        if not 0 <= self.overlap <= MAX_OVERLAP:
            raise UserError(f"--tile-overlap {self.overlap}: must be in 0..{MAX_OVERLAP} (a share of a tile's side)")

    @property
    def count(self) -> int:
        return self.rows * self.cols

    def boxes(self, h: int, w: int) -> list[tuple[int, int, int, int]]:
        """The tiles of an ``h`` × ``w`` frame as (y, x, height, width), row by row."""
        if h < self.rows or w < self.cols:
            raise UserError(f"a {w}x{h} frame is too small for {self.rows}x{self.cols} tiles")
        return [(y, x, th, tw) for y, th in _axis(h, self.rows, self.overlap)
                for x, tw in _axis(w, self.cols, self.overlap)]

    def split(self, img: np.ndarray, size: int, fit: str) -> np.ndarray:
        """A frame ``(H, W[, C])`` → its tiles fitted to the model input, ``(T, size, size[, C])``."""
        return np.stack([fit_image(img[y : y + th, x : x + tw], size, fit)
                         for y, x, th, tw in self.boxes(*img.shape[:2])])

    def stitch(self, maps: np.ndarray, shape: tuple[int, int], fit: str) -> np.ndarray:
        """The tiles' maps ``(T, S, S)`` → the frame's map ``(H, W)``: each tile's map back in its place, the
        largest value where tiles overlap."""
        if len(maps) != self.count:
            raise ValueError(f"{len(maps)} tile maps for a {self.rows}x{self.cols} grid")
        out = np.zeros(shape, np.float32)
        for m, (y, x, th, tw) in zip(maps, self.boxes(*shape), strict=True):
            view = out[y : y + th, x : x + tw]
            np.maximum(view, unfit_map(np.asarray(m, np.float32), (th, tw), fit), out=view)
        return out

    def frame_scores(self, scores: np.ndarray) -> np.ndarray:
        """Tile scores ``(N·T,)``, frame by frame → each frame's score, the largest of its tiles', ``(N,)``."""
        return np.asarray(scores, np.float32).reshape(-1, self.count).max(axis=1)

    def as_meta(self) -> dict[str, Any]:
        return {"rows": self.rows, "cols": self.cols, "overlap": self.overlap}

    def describe(self) -> str:
        return f"{self.rows}x{self.cols} tiles, {self.overlap * 100:g} % overlap"


def parse_tiles(text: str | None, overlap: float = 0.125, name: str = "--tiles") -> TileGrid | None:
    """``--tiles ROWSxCOLS`` (e.g. ``2x2``; ``1x1`` or None = no tiling) → a grid, or one UserError that names the
    value as ``name`` (the option, or a body field)."""
    if text is None:
        return None
    m = _SPEC.match(text)
    if not m:
        raise UserError(f"{name} {text!r}: expected ROWSxCOLS, e.g. 2x2 or 3x4")
    rows, cols = int(m.group(1)), int(m.group(2))
    if not (1 <= rows <= MAX_SIDE and 1 <= cols <= MAX_SIDE):
        raise UserError(f"{name} {rows}x{cols}: each side must be 1..{MAX_SIDE}")
    grid = TileGrid(rows, cols, float(overlap))
    return None if grid.count == 1 else grid


def from_meta(md: dict[str, Any]) -> TileGrid | None:
    """The grid a model was fitted with (checkpoint or graph metadata), or None for a whole-frame fit."""
    t = md.get("tiles")
    if not t:
        return None
    return TileGrid(int(t["rows"]), int(t["cols"]), float(t["overlap"]))


def per_frame(grid: TileGrid | None, scores: np.ndarray) -> np.ndarray:
    """Scores of the inferred inputs → scores of the frames (the same without a grid)."""
    return np.asarray(scores) if grid is None else grid.frame_scores(scores)
