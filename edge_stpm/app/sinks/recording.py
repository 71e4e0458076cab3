"""Recording sink: the overlay video of one source, written under a temporary name and renamed when finalised."""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from ...errors import UserError
from ...files import ensure_dir
from .base import Result, Sink

RECORD_SUFFIXES = (".mp4", ".m4v", ".mov", ".avi", ".mkv")


def letterbox(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``img`` scaled to fit ``size`` (w, h) with its aspect ratio kept, centred on black."""
    w, h = size
    s = min(w / img.shape[1], h / img.shape[0])
    nw, nh = max(1, round(img.shape[1] * s)), max(1, round(img.shape[0] * s))
    out = np.zeros((h, w, 3), np.uint8)
    x, y = (w - nw) // 2, (h - nh) // 2
    out[y : y + nh, x : x + nw] = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA)
    return out


class Recorder:
    """A video file written under a temporary name (``.NAME.part.EXT``) and renamed by ``finalise``. Frames of
    another size than the first are letterboxed to it."""

    def __init__(self, path: Path, fps: float) -> None:
        self.path, self.fps = Path(path), fps
        ensure_dir(self.path.parent)
        self.tmp = self.path.with_name(f".{self.path.stem}.part{self.path.suffix}")
        self.writer: cv2.VideoWriter | None = None
        self.frames = 0

    def write(self, img: np.ndarray) -> None:
        if self.writer is None:
            fourcc = cv2.VideoWriter_fourcc(*("mp4v" if self.path.suffix.lower() in (".mp4", ".m4v", ".mov") else "MJPG"))
            self.size = (img.shape[1], img.shape[0])
            self.writer = cv2.VideoWriter(str(self.tmp), fourcc, self.fps, self.size)
            if not self.writer.isOpened():
                raise UserError(f"cannot record to {self.path}: OpenCV has no writer for {self.path.suffix}")
        if (img.shape[1], img.shape[0]) != self.size:
            img = letterbox(img, self.size)
        self.writer.write(img)
        self.frames += 1

    def finalise(self) -> Path | None:
        if self.writer is None:
            return None
        self.writer.release()
        self.writer = None
        os.replace(self.tmp, self.path)
        return self.path


class RecordingSink(Sink):
    """Every drawn frame of one source into a video. Lossless for file sources (the recording holds every frame),
    newest-wins for live ones (a slow disk drops frames, counted, instead of stalling the camera)."""

    picture = True
    queue_size = 16

    def __init__(self, source: int, path: Path, fps: float, lossless: bool) -> None:
        self.source, self.name, self.lossless = source, f"recording[{source}]", lossless
        self.recorder = Recorder(path, fps)
        self.path: Path | None = None

    def wants(self, result: Result) -> bool:
        return result.source == self.source

    def take(self, result: Result) -> None:
        assert result.picture is not None
        self.recorder.write(result.picture)

    def close(self) -> None:
        self.path = self.recorder.finalise()
