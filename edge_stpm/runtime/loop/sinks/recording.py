"""Recording sink: the overlay video of one source, in segments. Each segment is written under a temporary name
(``.NAME.part.EXT``) and renamed when it is finished, so a kill or power loss costs at most the segment being
written — and less with ``.mkv``/``.avi``, whose unfinished part stays playable and is recovered on the next start.
The first segment is ``out.mp4``, the next ``out.001.mp4``, ``out.002.mp4``…"""
from __future__ import annotations

import os
import time
from datetime import datetime
from pathlib import Path

import cv2
import numpy as np

from edge_stpm.common.errors import UserError
from edge_stpm.common.files import ensure_dir
from edge_stpm.runtime.loop.sinks.base import Result, Sink

RECORD_SUFFIXES = (".mp4", ".m4v", ".mov", ".avi", ".mkv")
# an unfinished file of a killed writer: MJPG .avi and .mkv stay readable up to the last flushed frames, mp4v .mp4
# does not (its index is written last) — measured with OpenCV 5.0 (tests/line/test_recording.py)


def letterbox(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``img`` scaled to fit ``size`` (w, h) with its aspect ratio kept, centred on black."""
    w, h = size
    s = min(w / img.shape[1], h / img.shape[0])
    nw, nh = max(1, round(img.shape[1] * s)), max(1, round(img.shape[0] * s))
    out = np.zeros((h, w, 3), np.uint8)
    x, y = (w - nw) // 2, (h - nh) // 2
    out[y : y + nh, x : x + nw] = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA)
    return out


def segment_path(path: Path, k: int) -> Path:
    """Segment ``k`` of the recording ``path``: ``out.mp4`` for 0, then ``out.001.mp4``, ``out.002.mp4``…"""
    path = Path(path)
    return path if k == 0 else path.with_name(f"{path.stem}.{k:03d}{path.suffix}")


def part_path(path: Path) -> Path:
    """The temporary name a recording file is written under until it is finished."""
    return path.with_name(f".{path.stem}.part{path.suffix}")


def readable_frames(path: Path) -> int:
    """How many frames OpenCV reads from a video file (0 for an unplayable one)."""
    cap = cv2.VideoCapture(str(path))
    n = 0
    try:
        while cap.isOpened() and cap.read()[0]:
            n += 1
    finally:
        cap.release()
    return n


def playable(path: Path) -> bool:
    """Whether OpenCV can read a first frame of the video file (a kept leftover is then at least that)."""
    cap = cv2.VideoCapture(str(path))
    try:
        return bool(cap.isOpened() and cap.read()[0])
    finally:
        cap.release()


def recover_leftovers(path: Path) -> list[str]:
    """Unfinished parts that an earlier, killed run left beside the recording ``path`` (``.out.part.mp4``,
    ``.out.003.part.mp4``): a playable one is kept as ``out.recovered-YYYYmmdd-HHMMSS[.NNN].EXT`` (its last change),
    an unplayable one is removed. Returns one line per file saying which."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    said = []
    for part in sorted(path.parent.glob(f".{path.stem}*.part{path.suffix}")):
        middle = part.name[len(path.stem) + 1 : -len(".part" + path.suffix)]  # "" or ".003" (or another run's name)
        if middle and not (middle[0] == "." and middle[1:].isdigit()):
            continue
        if not playable(part):  # one frame decides: a start must not decode a whole minute of footage per leftover
            part.unlink(missing_ok=True)
            said.append(f"removed {part}: an unfinished recording of a run that was stopped hard, not playable "
                        f"(use .mkv or .avi to keep such footage)")
            continue
        stamp = datetime.fromtimestamp(part.stat().st_mtime).strftime("%Y%m%d-%H%M%S")
        target = path.with_name(f"{path.stem}.recovered-{stamp}{middle}{path.suffix}")
        os.replace(part, target)
        said.append(f"recovered {target}: {target.stat().st_size / 2**20:.1f} MB of a run that was stopped hard")
    return said


class Recorder:
    """A video in segments of ``segment_s`` seconds (0: one file), each written under its temporary name and renamed
    when the next one starts or by ``finalise``. Frames of another size than the first are letterboxed to it."""

    def __init__(self, path: Path, fps: float, segment_s: float = 0.0) -> None:
        self.path, self.fps, self.segment_s = Path(path), fps, segment_s
        ensure_dir(self.path.parent)
        self.writer: cv2.VideoWriter | None = None
        self.size: tuple[int, int] | None = None
        self.frames = 0
        self.segments: list[Path] = []  # finished segments, in order
        self._k, self._started = 0, 0.0

    @property
    def tmp(self) -> Path:
        return part_path(segment_path(self.path, self._k))

    def _open(self, size: tuple[int, int]) -> None:
        # cv2.VideoWriter_fourcc exists at runtime; OpenCV's stubs list only VideoWriter.fourcc
        fourcc = cv2.VideoWriter_fourcc(  # type: ignore[attr-defined]
            *("mp4v" if self.path.suffix.lower() in (".mp4", ".m4v", ".mov") else "MJPG"))
        self.writer = cv2.VideoWriter(str(self.tmp), fourcc, self.fps, size)
        if not self.writer.isOpened():
            raise UserError(f"cannot record to {self.path}: OpenCV has no writer for {self.path.suffix}")
        self._started = time.monotonic()

    def write(self, img: np.ndarray) -> None:
        if self.writer is not None and self.segment_s and time.monotonic() - self._started >= self.segment_s:
            self._finish()
            self._k += 1
        if self.size is None:
            self.size = (img.shape[1], img.shape[0])
        if self.writer is None:
            self._open(self.size)
        if (img.shape[1], img.shape[0]) != self.size:
            img = letterbox(img, self.size)
        assert self.writer is not None
        self.writer.write(img)
        self.frames += 1

    def _finish(self) -> None:
        assert self.writer is not None
        self.writer.release()
        self.writer = None
        target = segment_path(self.path, self._k)
        os.replace(self.tmp, target)
        self.segments.append(target)

    def finalise(self) -> Path | None:
        """The current segment finished; returns the first segment (the recording's own name), None if no frame."""
        if self.writer is not None:
            self._finish()
        return self.segments[0] if self.segments else None


class RecordingSink(Sink):
    """Every drawn frame of one source into a video. Lossless for file sources (the recording holds every frame),
    newest-wins for live ones (a slow disk drops frames, counted, instead of stalling the camera)."""

    picture = True
    queue_size = 16

    def __init__(self, source: int, path: Path, fps: float, lossless: bool, segment_s: float = 0.0) -> None:
        self.source, self.name, self.lossless = source, f"recording[{source}]", lossless
        self.recorder = Recorder(path, fps, segment_s)
        self.path: Path | None = None

    @property
    def segments(self) -> list[Path]:
        return self.recorder.segments

    def wants(self, result: Result) -> bool:
        return result.source == self.source

    def take(self, result: Result) -> None:
        assert result.picture is not None
        self.recorder.write(result.picture)

    def close(self) -> None:
        self.path = self.recorder.finalise()
