"""The small public API for line software: ``Inspector.load(path).inspect(frame)``.

>>> insp = Inspector.load("engines/mytile")        # a checkpoint, .onnx, .engine or export folder
>>> r = insp.inspect(cv2.imread("part.png"))       # uint8 BGR, any size
>>> r.ng, r.normalised_score, r.anomaly_map.shape  # verdict, score on the scale (0 good, 1 threshold), (H, W) map
"""
from __future__ import annotations

import functools
import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from edge_stpm.common.errors import UserError
from edge_stpm.common.images import fit_image, unfit_map
from edge_stpm.contract import tiles
from edge_stpm.contract.artifacts import SELFTEST
from edge_stpm.contract.scale import ScoreScale
from edge_stpm.contract.schema import SELFTEST as SELFTEST_SCHEMA, check
from edge_stpm.contract.tiles import TileGrid
from edge_stpm.runtime.backends.base import Backend, FrameRunner
from edge_stpm.runtime.backends.select import Choice, frame_artefact, open_backend, unlisted_reason
from edge_stpm.runtime.overlay import (
    ALPHA,
    colour_bar,
    draw_contours,
    index_scale,
    inspection_overlay,
    no_model_banner,
    region_mask,
    verdict_banner,
)

FRAME_PATHS = ("auto", "device", "host")


@dataclass
class InspectionResult:
    """One frame's result. ``anomaly_map`` is float32 ``(H, W)`` at the frame's size (computed on first use from
    ``model_map``, the map at model resolution); ``score`` is the raw image score, ``normalised_score`` the score on
    the model's score scale (``scale``, ``contract/scale.py``: 0 = a typical good part, 1.0 = the threshold), ``ng``
    = normalised ≥ 1; ``image_threshold`` and ``pixel_threshold`` are the raw thresholds in force. ``coloured`` is
    the frame already coloured by the device frame path (None on the host path); ``path`` says which ran."""

    score: float
    normalised_score: float
    ng: bool
    model_map: np.ndarray
    frame_shape: tuple[int, int]
    fit: str
    pixel_threshold: float
    image_threshold: float = float("nan")
    coloured: np.ndarray | None = None
    path: str = "host"
    # set by a station recipe (runtime/station/recipes.py): which recipe judged it, the inspected region of the
    # frame (x, y, w, h) and the frame's size, the pixels inspected (False = ignored), the largest defect region
    recipe: dict[str, Any] | None = None
    roi: tuple[int, int, int, int] | None = None
    full_shape: tuple[int, int] | None = None
    keep: np.ndarray | None = None
    defect_area: int | None = None
    notes: tuple[str, ...] = ()
    # a recipe's review band (runtime/station/recipes.py): not NG, but scored inside the band below the threshold —
    # a human decides (the third verdict, REVIEW; never counted as OK)
    review: bool = False
    # a tiled fit (contract/tiles.py): model_map is then the tiles' maps (T, S, S), stitched by region_map
    tiles: TileGrid | None = None
    # the score scale the normalised score and the overlay are on (None: the old scale, zero = 0)
    scale: ScoreScale | None = None
    # False: no model judged this frame (a station recipe with none yet): no verdict sink takes it but collect,
    # the PLC refuses triggers meanwhile (error 7), the live view shows the frame as it is
    judged: bool = True

    @property
    def pixel_zero(self) -> float:
        """The raw map value of a typical good part (the scale's 0; 0.0 on the old scale)."""
        return 0.0 if self.scale is None else self.scale.pixel_zero

    def on_scale(self, raw: float) -> float:
        """A raw image score of this model on this result's scale."""
        return float(raw) / self.image_threshold if self.scale is None else self.scale.image(raw)

    @property
    def score_scale(self) -> str:
        """Which scale ``normalised_score`` is on: ``good`` (0 = typical good part) or the old ``threshold``."""
        return "threshold" if self.scale is None else self.scale.kind

    @functools.cached_property
    def region_map(self) -> np.ndarray:
        """The map at the inspected region's size (the whole frame without a ROI); ignored pixels are 0."""
        m = (unfit_map(self.model_map, self.frame_shape, self.fit) if self.tiles is None
             else self.tiles.stitch(self.model_map, self.frame_shape, self.fit))
        return m if self.keep is None else np.where(self.keep, m, 0).astype(m.dtype)

    @functools.cached_property
    def anomaly_map(self) -> np.ndarray:
        """The map at the frame's size (0 outside a recipe's ROI and on ignored pixels)."""
        if self.roi is None or self.full_shape is None:
            return self.region_map
        x, y, w, h = self.roi
        out = np.zeros(self.full_shape, np.float32)
        out[y : y + self.frame_shape[0], x : x + self.frame_shape[1]] = self.region_map
        return out

    @property
    def square_map(self) -> np.ndarray:
        """One map of the inspected region for a thumbnail: the model's map, or for a tiled fit the stitched one."""
        return self.model_map if self.tiles is None else self.region_map

    @property
    def verdict(self) -> str:
        if not self.judged:
            return "NO MODEL"
        return "NG" if self.ng else "REVIEW" if self.review else "OK"

    def overlay(self, frame: np.ndarray, alpha: float = ALPHA, text: Sequence[str] = ()) -> np.ndarray:
        """The frame with colour near/above the threshold, contours on NG only, a colour bar and the banner. With
        the device frame path's colouring only the contours (NG frames), the bar and the text are drawn here."""
        text = list(text) + list(self.notes)
        if not self.judged:
            return no_model_banner(frame, text)
        if self.coloured is None or alpha != ALPHA:
            out = inspection_overlay(frame, self.anomaly_map, self.pixel_threshold, self.ng, self.normalised_score,
                                     self.image_threshold, text, alpha, verdict=self.verdict, zero=self.pixel_zero)
            return self._outline_station(out)
        out = self.coloured.copy()
        if self.ng:
            draw_contours(out, region_mask(self.anomaly_map, self.pixel_threshold), (255, 255, 255),
                          max(1, round(out.shape[0] / 360)))
        colour_bar(out)
        return self._outline_station(verdict_banner(out, self.ng, self.normalised_score, text, self.image_threshold,
                                                    self.verdict))

    def _outline_station(self, out: np.ndarray) -> np.ndarray:
        """A recipe's ROI (thin white box) and ignored regions (grey outline) drawn on the overlay."""
        if self.roi is None and self.keep is None:
            return out
        x, y = (self.roi[0], self.roi[1]) if self.roi else (0, 0)
        t = max(1, round(out.shape[0] / 480))
        if self.roi is not None:
            cv2.rectangle(out, (x, y), (x + self.frame_shape[1] - 1, y + self.frame_shape[0] - 1), (255, 255, 255), t)
        if self.keep is not None:
            cnts, _ = cv2.findContours((~self.keep).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            cv2.drawContours(out, cnts, -1, (160, 160, 160), t, offset=(x, y))
        return out


def frame_self_test(backend: Backend, runner: FrameRunner, bundle: Path, height: int, width: int) -> str | None:
    """None when a frame graph / engine passes the bundle's self-test, else why not. The bundle's reference images
    (``selftest.json``, model-size PNGs) are resized to the frame (INTER_AREA, as export's frame check) and run
    through the frame path and through the host path (fit on the host, then ``backend``'s model graph); every score
    pair must agree within the precision's self-test tolerance in units of the image threshold (FP16 / INT8:
    twice it, as each path is within its gate of FP32)."""
    doc, why = _selftest_doc(bundle)
    if doc is None:
        return why
    imgs = [cv2.imread(str(Path(bundle) / n), cv2.IMREAD_COLOR) for n in doc["images"]]
    frames = [cv2.resize(i, (width, height), interpolation=cv2.INTER_AREA) for i in imgs if i is not None]
    if len(frames) != len(imgs):
        return f"{SELFTEST}: a reference image is missing or unreadable; re-export the bundle"
    md = backend.metadata
    fitted = np.stack([fit_image(f, int(md["image_size"]), md.get("fit", "stretch")) for f in frames])
    host = np.asarray(backend.infer_any(fitted)[1], np.float64)
    scale = index_scale(float(md["thresholds"]["pixel"]), ScoreScale.of(md["thresholds"]).pixel_zero)
    dev = np.array([runner.run(f, scale)[1] for f in frames], np.float64)
    prec = backend.precision
    tol = float(doc["tolerance_threshold_units"].get(prec, 0.01)) * (1.0 if prec == "fp32" else 2.0)
    err = np.abs(dev - host) / float(md["thresholds"]["image"])
    worst = int(np.argmax(err))
    if not err[worst] <= tol:
        return (f"fails the bundle's self-test: {doc['images'][worst]} at {width}x{height} scores {dev[worst]:.5g} "
                f"on the frame path, {host[worst]:.5g} on the host path (off by {err[worst]:.3g} × the threshold, "
                f"tolerance {tol:g})")
    return None


def _selftest_doc(bundle: Path) -> tuple[dict[str, Any] | None, str]:
    """The bundle's ``selftest.json`` checked against its schema, or (None, why it cannot be used)."""
    path = Path(bundle) / SELFTEST
    if not path.is_file():
        return None, f"the bundle has no self-test ({SELFTEST}) to check it with: re-export the bundle"
    try:
        return check(json.loads(path.read_text()), SELFTEST_SCHEMA, str(path), "re-export the bundle"), ""
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None, f"{path} is not readable JSON: re-export the bundle"
    except UserError as exc:
        return None, str(exc)


class NoModelBackend:
    """The backend of a recipe with no model yet: nothing to run (what a page or a header reads of a backend)."""

    name, precision, accelerated, concurrent, image_size = "none", "-", False, True, 0
    metadata: dict[str, Any] = {}

    def describe(self) -> str:
        return "no model yet"

    def close(self) -> None:
        pass


class NoModel:
    """A station recipe's inspector before it has a model: it judges nothing — every result says ``judged=False``
    (see ``InspectionResult``) — until a model is deployed to the recipe."""

    backend = NoModelBackend()
    path_note = "no model yet"
    image_threshold = pixel_threshold = float("nan")
    threshold_scale = 1.0
    size, fit, tiles, frame_path, scale = 0, "stretch", None, "host", None

    def inspect_batch(self, frames: Sequence[np.ndarray]) -> list[InspectionResult]:
        return [InspectionResult(0.0, 0.0, False, np.zeros((1, 1), np.float32), f.shape[:2], "stretch", float("nan"),
                                 judged=False) for f in frames]

    def inspect(self, frame: np.ndarray) -> InspectionResult:
        return self.inspect_batch([frame])[0]

    def close(self) -> None:
        pass


class Inspector:
    """Frames in, verdicts out, over any backend. Thresholds come from the model's metadata; ``threshold`` moves
    them on the score scale like every score shown (``contract/scale.py``: 0 = a typical good part, 1.0 = the
    stored threshold; 1.2 = 20 % of the way from typical good to the threshold beyond it, image and pixel alike)."""

    def __init__(self, backend: Backend, threshold: float | None = None, frame_path: str = "auto",
                 threshold_multiple: bool = False) -> None:
        """``threshold_multiple``: ``threshold`` multiplies the stored raw image threshold (a version 1 station
        file's meaning) and is converted to the score scale so that the raw image threshold is the same."""
        if frame_path not in FRAME_PATHS:
            raise UserError(f"unknown frame path {frame_path!r}; choose one of {', '.join(FRAME_PATHS)}")
        self.backend = backend
        self.frame_path = frame_path
        self.runners: dict[tuple[int, int], FrameRunner | None] = {}
        self.refused: dict[tuple[int, int], str] = {}  # (height, width) → why its frame graph / engine is not used
        self._runners_lock = threading.Lock()  # inspect_batch may run on several loop workers at once
        md = backend.metadata
        thr = md["thresholds"]
        scale = 1.0 if threshold is None else float(threshold)
        if not scale > 0:
            raise UserError(f"--threshold must be positive (1.0 = the stored threshold), not {threshold}")
        if threshold_multiple:
            scale = ScoreScale.of(thr).image(float(thr["image"]) * scale)
            if not scale > 0:
                raise UserError(f"threshold {threshold} × the stored image threshold lies at or below a typical good "
                                "part's score of this model: raise it, or write the station file as version 2")
        self.threshold_scale = scale
        self.scale = ScoreScale.of(thr, scale)
        self.image_threshold = self.scale.image_one
        self.pixel_threshold = self.scale.pixel_one
        self.size = int(md["image_size"])
        self.fit = md.get("fit", "stretch")
        self.tiles = tiles.from_meta(md)

    @classmethod
    def load(cls, path: str | Path, backend: str = "auto", threshold: float | None = None,
             precision: str | None = None, threads: int | None = None, verbose: bool = False,
             frame_path: str = "auto", choice: Choice | None = None,
             threshold_multiple: bool = False) -> "Inspector":
        """``choice``: what ``backends.select.resolve`` already picked for ``path`` (verified once, not twice)."""
        return cls(open_backend(Path(path), backend, precision, threads=threads, verbose=verbose, choice=choice),
                   threshold, frame_path, threshold_multiple)

    def prepare(self, frame: np.ndarray) -> np.ndarray:
        """A uint8 BGR frame of any size → the model input ``(S, S, 3)``, or a tiled fit's tiles ``(T, S, S, 3)``."""
        if frame.ndim == 2:
            frame = np.repeat(frame[..., None], 3, axis=2)
        if self.tiles is not None:
            return self.tiles.split(frame, self.size, self.fit)
        return fit_image(frame, self.size, self.fit)

    def inputs(self, frame: np.ndarray) -> np.ndarray:
        """The model inputs one frame makes, ``(n, S, S, 3)``: 1, or a tiled fit's tiles."""
        x = self.prepare(frame)
        return x if self.tiles is not None else x[None]

    def inspect(self, frame: np.ndarray) -> InspectionResult:
        return self.inspect_batch([frame])[0]

    def runner(self, frame: np.ndarray) -> FrameRunner | None:
        """The backend's device frame path for this frame's size (looked up once per size), if any and if wanted:
        ``auto`` only where the model runs on an accelerator, ``device`` wherever there is one, ``host`` never."""
        if self.frame_path == "host" or (self.frame_path == "auto" and not self.backend.accelerated):
            return None
        if self.tiles is not None:  # the frame graphs fit one square; tiles are cut and stitched on the host
            return None
        if frame.ndim != 3 or frame.shape[2] != 3:
            return None
        key = (int(frame.shape[0]), int(frame.shape[1]))
        with self._runners_lock:
            if key not in self.runners:
                self.runners[key] = self._vetted_runner(*key)
            return self.runners[key]

    def _vetted_runner(self, height: int, width: int) -> FrameRunner | None:
        """The backend's frame runner for this size, used only when its file is listed in the bundle's manifest
        (same size and sha256) and passes the bundle's self-test (``frame_self_test``); else None — the host path
        runs — and ``refused`` (shown by ``path_note``) says why."""
        artefact = frame_artefact(self.backend, height, width)
        why = unlisted_reason(artefact) if artefact is not None else None
        runner = None if why else self.backend.frame_runner(height, width)
        if runner is not None and artefact is not None:
            why = frame_self_test(self.backend, runner, artefact.parent, height, width)
            if why:
                runner.close()
                runner = None
        if why:
            self.refused[(height, width)] = why
        return runner

    def inspect_batch(self, frames: Sequence[np.ndarray]) -> list[InspectionResult]:
        """Frames with a device frame path run through it one by one; the others are fitted on the host and
        inferred together."""
        out: list[InspectionResult | None] = [None] * len(frames)
        host = []
        for i, f in enumerate(frames):
            r = self.runner(f)
            if r is None:
                host.append(i)
                continue
            amap, score, coloured = r.run(f, index_scale(self.pixel_threshold, self.scale.pixel_zero))
            out[i] = self.result(f, amap, score, coloured)
        if host and self.tiles is not None:  # every tile of every frame in one batch
            n = self.tiles.count
            maps, scores = self.backend.infer_any(np.concatenate([self.inputs(frames[i]) for i in host]))
            for j, i in enumerate(host):
                out[i] = self.result(frames[i], maps[j * n : (j + 1) * n], float(scores[j * n : (j + 1) * n].max()))
        elif host:
            maps, scores = self.backend.infer_any(np.stack([self.prepare(frames[i]) for i in host]))
            for i, m, s in zip(host, maps, scores, strict=False):
                out[i] = self.result(frames[i], m, s)
        return out  # type: ignore[return-value]  # every slot filled above

    def result(self, frame: np.ndarray, amap: np.ndarray, score: float,
               coloured: np.ndarray | None = None) -> InspectionResult:
        norm = self.scale.image(score)
        return InspectionResult(float(score), norm, norm >= 1.0, amap, frame.shape[:2], self.fit, self.pixel_threshold,
                                self.image_threshold, coloured, "device" if coloured is not None else "host",
                                tiles=self.tiles, scale=self.scale)

    @property
    def path_note(self) -> str:
        """Which frame path ran for each frame size seen so far."""
        if self.frame_path == "host":
            return "host path (--frame-path host)"
        if self.tiles is not None:
            return f"host path ({self.tiles.describe()}: cut and stitched on the host, the tiles inferred as one batch)"
        if self.frame_path == "auto" and not self.backend.accelerated:
            return ("host path (the model runs on the CPU, where OpenCV's fit and colour are cheaper; "
                    "--frame-path device)")
        if not self.runners:
            return "no frame yet"
        return "; ".join(f"{w}x{h}: " + (f"device frame path ({r.name})" if r else
                                         f"host path (frame path refused: {self.refused[(h, w)]})"
                                         if (h, w) in self.refused else "host path (no frame graph for this size)")
                         for (h, w), r in self.runners.items())

    def close(self) -> None:
        for r in self.runners.values():
            if r is not None:
                r.close()
        self.backend.close()
