"""Recipes on the box: every recipe's model preloaded, one active; the PLC (or HTTP) selects another between two
frames, with no load on the trigger path. A recipe's ROI, ignore mask and minimum defect area are applied here,
around the model: the graph maps and scores the inspected region, then ignored pixels are cleared, the image score
is taken again over what is left (the graph's own rule: the max, or the mean of the top k %), and an NG needs one
connected region above the pixel threshold of at least ``min_defect_area`` frame pixels.
"""
from __future__ import annotations

import dataclasses
import math
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import cv2
import numpy as np

from edge_stpm.common.errors import UserError
from edge_stpm.common.images import fit_image, read_image
from edge_stpm.contract.artifacts import model_sha256
from edge_stpm.runtime.inspector import InspectionResult, Inspector, NoModel
from edge_stpm.runtime.station.config import Recipe
from edge_stpm.runtime.station.drift import calibrated


def score_of(model_map: np.ndarray, top_percent: float) -> float:
    """The image score as the graph computes it (``training.model.image_score``): the map's max, or the mean of
    its ``ceil(top_percent % · S²)`` largest values."""
    flat = model_map.ravel()
    if top_percent <= 0:
        return float(flat.max())
    k = max(1, math.ceil(top_percent / 100.0 * flat.size))
    return float(np.partition(flat, flat.size - k)[flat.size - k:].mean())


def largest_region(amap: np.ndarray, threshold: float, keep: np.ndarray | None) -> int:
    """Pixels of the largest 8-connected region of ``amap ≥ threshold`` (outside ignored pixels)."""
    above = (amap >= threshold)
    if keep is not None:
        above &= keep
    if not above.any():
        return 0
    n, _, stats, _ = cv2.connectedComponentsWithStats(above.astype(np.uint8), connectivity=8)
    return int(stats[1:, cv2.CC_STAT_AREA].max()) if n > 1 else 0


@dataclass
class LoadedRecipe:
    """A recipe with its model open and its masks built per frame size."""

    cfg: Recipe
    inspector: Inspector | NoModel  # NoModel: the recipe has no model yet (it learns its first one on the box)
    sha256: str
    load_s: float
    masks: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    version: int | None = None  # its version in the model store (0: the station file's own model)
    users: int = 0  # batches inferring with it right now (a replaced recipe is closed when the last ends)
    retired: bool = False

    @property
    def info(self) -> dict[str, Any]:
        return {"index": self.cfg.index, "name": self.cfg.name, "model_sha256": self.sha256}

    @property
    def has_model(self) -> bool:
        return not isinstance(self.inspector, NoModel)

    def crop(self, frame: np.ndarray) -> np.ndarray:
        if self.cfg.roi is None:
            return frame
        x, y, w, h = self.cfg.roi
        out = frame[y : y + h, x : x + w]
        if out.shape[0] < 2 or out.shape[1] < 2:
            raise UserError(f"recipe {self.cfg.name}: roi {self.cfg.roi} lies outside the {frame.shape[1]}x"
                            f"{frame.shape[0]} frame")
        return out

    def ignored(self, frame_shape: tuple[int, int], shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray] | None:
        """(keep mask at the inspected region's ``shape``, keep mask at model resolution) — None without an
        ignore mask or polygons. Built once per frame size."""
        if self.cfg.ignore_mask is None and not self.cfg.ignore_polygons:
            return None
        if shape not in self.masks:
            self.masks[shape] = self._build(frame_shape, shape)
        return self.masks[shape]

    def _build(self, frame_shape: tuple[int, int], shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        h, w = shape
        x0, y0 = (self.cfg.roi[0], self.cfg.roi[1]) if self.cfg.roi else (0, 0)
        ignore = np.zeros((h, w), np.uint8)
        if self.cfg.ignore_mask is not None:
            m = read_image(self.cfg.ignore_mask)
            m = (m.max(axis=2) if m.ndim == 3 else m) > 127
            if m.shape == tuple(frame_shape) and self.cfg.roi is not None:
                m = m[y0 : y0 + h, x0 : x0 + w]
            if m.shape != (h, w):
                m = cv2.resize(m.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST) > 0
            ignore[m] = 1
        for poly in self.cfg.ignore_polygons:
            pts = np.round(np.array(poly, np.float64) - (x0, y0)).astype(np.int32)
            cv2.fillPoly(ignore, [pts], 1)
        size, fit, grid = self.inspector.size, self.inspector.fit, self.inspector.tiles
        model = (fit_image(ignore * 255, size, fit, interpolation=cv2.INTER_NEAREST) if grid is None
                 else grid.split(ignore * 255, size, fit)) < 128  # a tiled fit: the mask cut like the frame
        return ignore == 0, model

    def apply(self, r: InspectionResult, frame_shape: tuple[int, int], top_percent: float) -> InspectionResult:
        """The recipe's ignore mask and minimum area applied to one result of its inspected region."""
        notes = [f"recipe {self.cfg.index} {self.cfg.name}"]
        if not r.judged:  # no model yet: nothing to mask or measure
            return dataclasses.replace(r, recipe=self.info, roi=self.cfg.roi, full_shape=frame_shape,
                                       notes=tuple(notes))
        keep = self.ignored(frame_shape, r.frame_shape)
        changes: dict[str, Any] = {"recipe": self.info, "roi": self.cfg.roi, "full_shape": frame_shape}
        if keep is not None:
            model_map = np.where(keep[1], r.model_map, 0).astype(np.float32)
            score = (score_of(model_map, top_percent) if r.tiles is None
                     else max(score_of(m, top_percent) for m in model_map))
            norm = r.on_scale(score)
            changes |= {"model_map": model_map, "score": score, "normalised_score": norm, "ng": norm >= 1.0,
                        "keep": keep[0]}
            notes.append("ignore mask on")
        out = dataclasses.replace(r, **changes)
        if self.cfg.min_defect_area > 0:
            # the map of the inspected region is at that region's own size: one of its pixels is one frame pixel
            area = largest_region(out.region_map, r.pixel_threshold, keep[0] if keep else None) if out.ng else 0
            out = dataclasses.replace(out, ng=out.ng and area >= self.cfg.min_defect_area, defect_area=area)
            notes.append(f"min area {self.cfg.min_defect_area} px: largest {area} px")
        band = self.cfg.review_band
        if band is not None and not out.ng and out.normalised_score >= band:
            out = dataclasses.replace(out, review=True)
            notes.append(f"review band from {band:.2f}")
        out.notes = tuple(notes)
        return out


class RecipeSet:
    """Every recipe loaded; ``select`` changes the active one (thread-safe) and says whether the index exists."""

    def __init__(self, recipes: list[LoadedRecipe], initial: int) -> None:
        self.recipes = {r.cfg.index: r for r in recipes}
        if initial not in self.recipes:
            raise UserError(f"no recipe with index {initial}")
        self.lock = threading.Lock()
        self.active_index = initial
        self.withdrawn: set[int] = set()  # recipes being deleted or renamed: not selectable meanwhile
        self.changes = 0
        self.on_change: list[Callable[[LoadedRecipe, LoadedRecipe], None]] = []

    @property
    def active(self) -> LoadedRecipe:
        return self.recipes[self.active_index]

    def by_name(self, name: str) -> LoadedRecipe | None:
        return next((r for r in self.recipes.values() if r.cfg.name == name), None)

    def acquire(self) -> LoadedRecipe:
        """The active recipe, held for one batch (a swap cannot close it under the batch)."""
        with self.lock:
            rec = self.recipes[self.active_index]
            rec.users += 1
            return rec

    def release(self, rec: LoadedRecipe) -> None:
        with self.lock:
            rec.users -= 1
            close = rec.retired and rec.users == 0
        if close:
            rec.inspector.close()

    def replace(self, new: LoadedRecipe, close_old: bool = True) -> LoadedRecipe:
        """Put ``new`` in place of the recipe with its index — the next batch uses it; the old one is closed once
        no batch uses it (not with ``close_old`` False: ``new`` shares its model). Returns the old one."""
        with self.lock:
            old = self.recipes.get(new.cfg.index)
            if old is None or old.cfg.name != new.cfg.name:
                raise UserError(f"recipe {new.cfg.name} was deleted or renamed meanwhile: reload and try again")
            self.recipes[new.cfg.index] = new
            old.retired = close_old
            close = close_old and old.users == 0
        if close:
            old.inspector.close()
        return old

    def add(self, new: LoadedRecipe) -> None:
        """A recipe created while running: the PLC (and HTTP) can select it by its index from now on. ValueError when
        its index or name is taken (the caller checks first; this keeps two requests at once honest)."""
        with self.lock:
            if new.cfg.index in self.recipes or any(r.cfg.name == new.cfg.name for r in self.recipes.values()):
                raise ValueError(f"recipe {new.cfg.name} / index {new.cfg.index} exists")
            self.recipes[new.cfg.index] = new

    def withdraw(self, index: int) -> bool:
        """The recipe with ``index`` no longer selectable (it is being deleted or renamed: ``remove`` or ``rekey``
        follows, or ``restore`` if that fails); False when it is the active one (select another first)."""
        with self.lock:
            if index == self.active_index:
                return False
            self.withdrawn.add(index)
            return True

    def restore(self, index: int) -> None:
        with self.lock:
            self.withdrawn.discard(index)

    def remove(self, index: int) -> LoadedRecipe:
        """Take out a withdrawn recipe (deleted): its PLC index is free at once; its model is closed once no batch
        uses it. The dict is replaced, never changed under a reader."""
        with self.lock:
            old = self.recipes[index]
            self.recipes = {k: v for k, v in self.recipes.items() if k != index}
            self.withdrawn.discard(index)
            old.retired = True
            close = old.users == 0
        if close:
            old.inspector.close()
        return old

    def rekey(self, index: int, new: LoadedRecipe) -> None:
        """A withdrawn recipe under another name and/or index (``new``, on the same model), in its place in the
        order; selectable again by its new index."""
        with self.lock:
            self.recipes = {(new.cfg.index if k == index else k): (new if k == index else v)
                            for k, v in self.recipes.items()}
            self.withdrawn.discard(index)

    def names(self) -> dict[int, str]:
        """Every recipe's index and name (what the PLC's side shows)."""
        return {r.cfg.index: r.cfg.name for r in self.recipes.values()}

    def ready(self) -> bool:
        """Whether the active recipe has a model (the PLC's Trigger Ready needs one)."""
        return self.active.has_model

    def select(self, index: int) -> bool:
        with self.lock:
            if index not in self.recipes or index in self.withdrawn:
                return False
            before = self.recipes[self.active_index]
            if index != self.active_index:
                self.active_index = index
                self.changes += 1
            after = self.recipes[index]
        if before is not after:
            for cb in self.on_change:
                cb(before, after)
        return True

    def summary(self) -> list[dict[str, Any]]:
        return [r.info | {"version": r.version, "threshold": r.cfg.threshold, "roi": r.cfg.roi,
                          # the threshold on the score scale (what the web app shows and takes; a version-1 file's
                          # multiple converted, docs/score-scale.md)
                          "threshold_scale": round(r.inspector.threshold_scale, 4),
                          "min_defect_area": r.cfg.min_defect_area, "review_band": r.cfg.review_band,
                          "good_scores": _good(r),
                          "ignore": bool(r.cfg.ignore_mask or r.cfg.ignore_polygons), "load_s": round(r.load_s, 3),
                          "has_model": r.has_model,
                          "active": r.cfg.index == self.active_index} for r in self.recipes.values()]

    def close(self) -> None:
        for r in self.recipes.values():
            r.inspector.close()


def _good(rec: LoadedRecipe) -> dict[str, float | str] | None:
    """The held-out good images' p50 / p95 on the score scale at this recipe's threshold (where to start a review
    band: near the p95), from the model's calibration figures; None for a model calibrated before they were stored."""
    if isinstance(rec.inspector, NoModel):
        return None
    base = calibrated(rec.inspector.backend.metadata)
    if base is None:
        return None
    sc = rec.inspector.scale
    return {"p50": round(sc.image(base[0]), 4), "p95": round(sc.image(base[1]), 4), "p95_from": base[2],
            "scale": sc.kind}


class StationInspector:
    """What the loop sees as its inspector: each batch goes to the recipe active when it starts (a change takes
    effect between two frames), through that recipe's ROI, ignore mask and minimum area. The backend, the
    thresholds and the frame-path note are the active recipe's inspector's."""

    def __init__(self, recipes: RecipeSet, control: Any = None) -> None:
        self.recipes = recipes
        self.control = control  # runtime/station/control.StationControl: deploy, rollback, the audit log

    # what the run reads of its inspector, from the active recipe's (no attribute forwarding: these are all)
    @property
    def backend(self) -> Any:
        return self.recipes.active.inspector.backend

    @property
    def path_note(self) -> str:
        return str(self.recipes.active.inspector.path_note)

    @property
    def image_threshold(self) -> float:
        return float(self.recipes.active.inspector.image_threshold)

    @property
    def pixel_threshold(self) -> float:
        return float(self.recipes.active.inspector.pixel_threshold)

    @property
    def threshold_scale(self) -> float:
        return float(self.recipes.active.inspector.threshold_scale)

    def inspect(self, frame: np.ndarray) -> InspectionResult:
        return self.inspect_batch([frame])[0]

    def inspect_batch(self, frames: Sequence[np.ndarray]) -> list[InspectionResult]:
        rec = self.recipes.acquire()
        try:
            crops = [rec.crop(f) for f in frames]
            top = float(rec.inspector.backend.metadata.get("score_top_percent", 0.0) or 0.0)
            return [rec.apply(r, f.shape[:2], top)
                    for f, r in zip(frames, rec.inspector.inspect_batch(crops), strict=False)]
        finally:
            self.recipes.release(rec)

    def close(self) -> None:
        if self.control is not None:
            self.control.audit.write("station", "stop", self.recipes.active.cfg.name)
            self.control.audit.close()
        self.recipes.close()


def load_recipes(recipes: list[Recipe], initial: Recipe, backend: str = "auto", threads: int | None = None,
                 frame_path: str = "auto", log: Callable[[str], None] | None = None) -> RecipeSet:
    """Open every recipe's model now (preloaded: a changeover loads nothing), each checked like ``run --model``; a
    recipe with no model yet judges nothing (``NoModel``) until one is deployed to it."""
    loaded: list[LoadedRecipe] = []
    try:
        for r in recipes:
            if r.model is None:
                loaded.append(LoadedRecipe(r, NoModel(), "", 0.0))
                if log is not None:
                    log(f"recipe {r.index} {r.name}: no model yet — it judges nothing (PLC error 7, no Trigger "
                        "Ready) until one is deployed: collect good parts and fit on the Recipes page")
                continue
            t0 = time.perf_counter()
            insp = Inspector.load(Path(r.model), backend, r.threshold, r.precision, threads=threads,
                                  frame_path=frame_path, threshold_multiple=r.threshold_multiple)
            loaded.append(LoadedRecipe(r, insp, model_sha256(Path(r.model)), time.perf_counter() - t0))
            if log is not None:
                log(f"recipe {r.index} {r.name}: {Path(r.model).name} loaded in {loaded[-1].load_s:.2f} s")
    except BaseException:
        for lr in loaded:
            lr.inspector.close()
        raise
    return RecipeSet(loaded, initial.index)
