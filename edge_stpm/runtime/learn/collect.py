"""Day one: good parts from the line, before any model exists (``edge-stpm collect``; its run is built by
``runtime/station/app.py``'s ``collect``, like ``run``'s).

The station's own loop runs with no model: every frame (free-running, one per PLC / HTTP trigger, or one per
camera trigger) goes through a pass-through "inspection" (verdict OK, score 0: the PLC's handshake completes as
usual) to ``CollectSink``, which writes the raw frame — after the same ROI as ``run`` — as PNG into an MVTec-layout
folder (``OUT/train/good/``). A frame too like the last one kept (a stopped conveyor shows the same part again) is
skipped: the mean absolute difference of two 64×64 grey thumbnails, in grey levels, must reach ``min_change``.
When the target count is reached the loop stops; a contact sheet of what was kept is written beside.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import cv2
import numpy as np

from edge_stpm.common.errors import UserError
from edge_stpm.common.files import OnceFile, ZipBuilds, tree_members, write_bytes
from edge_stpm.runtime.inspector import InspectionResult, NoModelBackend
from edge_stpm.runtime.loop.sinks.base import Result, Sink

THUMB = 64
SHEET_MAX = 100  # thumbnails on the contact sheet (spread over what was kept)


def thumb(image: np.ndarray) -> np.ndarray:
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
    return cv2.resize(grey, (THUMB, THUMB), interpolation=cv2.INTER_AREA).astype(np.float32)


def change(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of two thumbnails, in grey levels (0–255)."""
    return float(np.abs(a - b).mean())


class PassThrough:
    """The loop's inspector when there is no model yet: every frame is OK with score 0 (the PLC sees Results Ready
    with OK, so its handshake runs exactly as it will with a model)."""

    backend = NoModelBackend()
    path_note = "no model (collect)"
    threshold_scale = 1.0

    def inspect_batch(self, frames: Sequence[np.ndarray]) -> list[InspectionResult]:
        return [InspectionResult(0.0, 0.0, False, np.zeros((1, 1), np.float32), f.shape[:2], "stretch", 1.0, 1.0)
                for f in frames]

    def inspect(self, frame: np.ndarray) -> InspectionResult:
        return self.inspect_batch([frame])[0]

    def close(self) -> None:
        pass


@dataclass
class CollectStats:
    kept: list[Path] = field(default_factory=list)
    seen: int = 0
    duplicates: int = 0
    bytes: int = 0  # of the frames kept (PNG files written)


MB = 2**20


def tree_bytes(folder: Path) -> int:
    """Bytes of the files under ``folder`` (0 if there is none)."""
    total, stack = 0, [Path(folder)]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:
            continue
        for e in entries:
            with contextlib.suppress(OSError):
                if e.is_dir(follow_symlinks=False):
                    stack.append(Path(e.path))
                elif e.is_file(follow_symlinks=False):
                    total += e.stat(follow_symlinks=False).st_size
    return total


@dataclass
class DiskBudget:
    """How much collecting may take: at most ``budget_mb`` under ``root`` (every collection there together) and at
    least ``min_free_mb`` left free on its disk for the record and evidence. What ``root`` holds is measured once
    (``start``) and then counted frame by frame; the disk's free space is read at most every ``check_s`` seconds
    (not per frame), and counted down by the frames kept in between."""

    root: Path
    budget_mb: float = 2048.0
    min_free_mb: float = 512.0
    check_s: float = 5.0
    used: int = 0  # bytes under root
    free: int | None = None  # bytes free on root's disk at the last reading, less what was kept since
    checked: float = -math.inf  # time.monotonic() of that reading

    def start(self) -> None:
        self.used, self.free, self.checked = tree_bytes(self.root), None, -math.inf

    def refuse(self, nbytes: int) -> str | None:
        """Why ``nbytes`` more may not be written (one line: "the disk budget (…)", "the free-space floor (…)"), or
        None."""
        if self.used + nbytes > self.budget_mb * MB:
            return (f"the disk budget ({self.used / MB:.1f} of {self.budget_mb:g} MB for collections in {self.root} "
                    "used: download and delete older collections)")
        now = time.monotonic()
        if self.free is None or now - self.checked >= self.check_s:
            probe = next(p for p in (self.root, *self.root.parents) if p.exists())  # the disk it will be on
            self.free, self.checked = shutil.disk_usage(probe).free, now
        if self.free - nbytes < self.min_free_mb * MB:
            return (f"the free-space floor ({self.free / MB:.0f} MB free on the disk of {self.root}, at least "
                    f"{self.min_free_mb:g} MB must stay free for the record and evidence)")
        return None

    def kept(self, nbytes: int) -> None:
        self.used += nbytes
        if self.free is not None:
            self.free -= nbytes


class CollectSink(Sink):
    """Raw frames into ``folder`` (PNG, written under a temporary name and renamed), near-duplicates skipped, until
    ``count`` are kept; then ``done`` is set (the loop stops on it). Lossless: a frame the PLC triggered is never
    dropped for a slow disk."""

    name = "collect"
    lossless = True
    required = True
    queue_size = 256

    def __init__(self, folder: Path, count: int, min_change: float, done: threading.Event,
                 on_kept: Callable[[CollectStats], None] | None = None, budget: DiskBudget | None = None) -> None:
        self.folder, self.count, self.min_change, self.done = Path(folder), count, min_change, done
        self.on_kept, self.budget = on_kept, budget
        self.stopped: str | None = None  # why it stopped before the count ("stopped: the disk budget (…)")
        self.stats = CollectStats()
        self.last: np.ndarray | None = None
        self.next_index = 0

    def open(self) -> None:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot create {self.folder}: {exc.strerror or exc}") from None
        existing = sorted(self.folder.glob("*.png"))
        # a second collect into the same folder adds to it (numbering goes on), never overwrites
        self.next_index = 1 + max((int(p.stem) for p in existing if p.stem.isdigit()), default=-1)

    def take(self, r: Result) -> None:
        if len(self.stats.kept) >= self.count:
            return
        self.stats.seen += 1
        t = thumb(r.image)
        if self.last is not None and change(t, self.last) < self.min_change:
            self.stats.duplicates += 1
            return
        ok, png = cv2.imencode(".png", r.image)
        if not ok:
            raise RuntimeError("PNG encoding failed")
        why = self.budget.refuse(png.nbytes) if self.budget is not None else None
        if why is not None:  # not written, not counted: the collection ends here
            self.stop(why)
            return
        path = self.folder / f"{self.next_index:05d}.png"
        write_bytes(path, png.tobytes())
        self.next_index += 1
        self.last = t
        self.stats.kept.append(path)
        self.stats.bytes += png.nbytes
        if self.budget is not None:
            self.budget.kept(png.nbytes)
        if self.on_kept is not None:
            self.on_kept(self.stats)
        if len(self.stats.kept) >= self.count:
            self.done.set()

    def stop(self, why: str) -> None:
        """End the collection before its count; ``why`` is kept for the status."""
        self.stopped = f"stopped: {why}"
        self.done.set()


def contact_sheet(paths: Sequence[Path], out: Path, cell: int = 128, cols: int = 10) -> Path | None:
    """Up to ``SHEET_MAX`` of ``paths`` (spread evenly) as one JPEG grid, each cell labelled with its file name."""
    if not paths:
        return None
    step = max(1, math.ceil(len(paths) / SHEET_MAX))
    pick = list(paths)[::step][:SHEET_MAX]
    cols = min(cols, len(pick))
    rows = math.ceil(len(pick) / cols)
    sheet = np.full((rows * (cell + 16), cols * cell, 3), 32, np.uint8)
    for i, p in enumerate(pick):
        img = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if img is None:
            continue
        h, w = img.shape[:2]
        s = cell / max(h, w)
        small = cv2.resize(img, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
        y, x = (i // cols) * (cell + 16), (i % cols) * cell
        sheet[y : y + small.shape[0], x : x + small.shape[1]] = small
        cv2.putText(sheet, p.stem, (x + 3, y + cell + 12), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (220, 220, 220), 1,
                    cv2.LINE_AA)
    ok, jpg = cv2.imencode(".jpg", sheet, [cv2.IMWRITE_JPEG_QUALITY, 85])
    return write_bytes(out, jpg.tobytes()) if ok else None


@dataclass
class CollectSettings:
    """``edge-stpm collect``'s options (``runtime/station/app.py``'s ``collect`` makes its run of them)."""

    specs: list[str]
    out: Path
    count: int = 200
    min_change: float = 3.0
    trigger: str = "free-run"
    roi: tuple[int, int, int, int] | None = None
    modbus: str | None = None
    opcua: str | None = None
    opcua_user: str | None = None
    http: str | None = None
    http_token: str | None = None
    reconnect: float = 10.0
    max_frames: int | None = None


class StationCollect(Sink):
    """Collecting on a running station (the web app's Recipes page): idle until ``arm``; then the next frames, cut
    to the active recipe's ROI, go through a ``CollectSink`` into ``root/<recipe>-<UTC time>/train/good`` until its
    count is reached — or until the disk budget says no (``DiskBudget``: at most ``budget_mb`` MB under ``root``, all
    collections together, and ``min_free_mb`` MB left free on its disk; the state then says why). Lossy while idle
    (it takes nothing), and a slow disk never holds up the line: a frame that finds the queue full is not collected
    (``dropped`` in the health page). ``zip`` builds the download on disk, in ``root/.downloads``."""

    name = "collect-on-demand"
    queue_size = 64
    unjudged = True  # a recipe with no model yet collects its first good parts

    def __init__(self, root: Path, budget_mb: float = 2048.0, min_free_mb: float = 512.0,
                 check_s: float = 5.0) -> None:
        self.root = Path(root)
        self.lock = threading.Lock()
        self.current: CollectSink | None = None
        self.folder: Path | None = None
        self.recipe: str | None = None
        self.budget = DiskBudget(self.root, budget_mb, min_free_mb, check_s)
        self.downloads = ZipBuilds("collection", keep_free_mb=min_free_mb)

    def arm(self, recipe: str, count: int, min_change: float) -> dict[str, Any]:
        if not 1 <= count <= 100_000 or not 0 <= min_change <= 255:
            raise UserError("count must be 1..100000 and min_change 0..255")
        with self.lock:
            if self.current is not None and not self.current.done.is_set():
                raise UserError(f"a collection is under way ({len(self.current.stats.kept)} of {self.current.count})")
            self.budget.start()
            why = self.budget.refuse(0)
            if why is not None:
                raise UserError(f"not collecting: {why}")
            folder = self.root / f"{recipe}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
            sink = CollectSink(folder / "train" / "good", count, min_change, threading.Event(), budget=self.budget)
            sink.open()
            self.current, self.folder, self.recipe = sink, folder, recipe
        return self.status()

    def wants(self, r: Result) -> bool:
        c = self.current
        return c is not None and not c.done.is_set()

    def take(self, r: Result) -> None:
        c = self.current
        if c is None or c.done.is_set():
            return
        roi = r.inspection.roi
        if roi is not None:  # the recipe's region, as its model sees it
            x, y, w, h = roi
            r = dataclasses.replace(r, image=r.image[y : y + h, x : x + w])
        try:
            c.take(r)
        except UserError as exc:  # the disk filled faster than the budget could see (another writer): stop, say why
            c.stop(str(exc))
        if c.done.is_set() and self.folder is not None:
            with contextlib.suppress(UserError):
                contact_sheet(c.stats.kept, self.folder / "contact_sheet.jpg")

    def status(self) -> dict[str, Any]:
        """``state``: idle, collecting, done, or "stopped: <why>" (the budget, the free-space floor, a write that
        failed); ``kept``: the frames written (each one a file in the folder)."""
        c = self.current
        if c is None:
            return {"state": "idle"}
        state = c.stopped or ("done" if c.done.is_set() else "collecting")
        return {"state": state, "recipe": self.recipe, "folder": str(self.folder), "count": c.count,
                "kept": len(c.stats.kept), "seen": c.stats.seen, "duplicates": c.stats.duplicates,
                "kept_mb": round(c.stats.bytes / MB, 3)}

    def zip(self) -> OnceFile:
        """The last collection (its train/good and contact sheet) as a zip for a workstation, built on disk in
        ``root/.downloads`` (the collections' own disk, not /tmp) and returned open and already unlinked (send it,
        then close it). ``Busy`` while another collection zip is being built."""
        with self.downloads.one():
            if self.folder is None or not self.folder.is_dir():
                raise UserError("nothing collected yet")
            return self.downloads.write(self.root / ".downloads", tree_members(self.folder))
