"""NG-snapshot sink: the frame, its overlay and the event as files, for the NG results the loop chose to keep."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from edge_stpm.common.files import write_bytes, write_json
from edge_stpm.runtime.loop.sinks.base import Result, Sink


def png(img: np.ndarray) -> bytes:
    return cv2.imencode(".png", img)[1].tobytes()


class SnapshotSink(Sink):
    """``<stem>_frame.png``, ``<stem>_overlay.png`` and ``<stem>.json`` for each result with a ``snapshot`` stem
    (the loop sets it on NG frames, at most one per ``--anomaly-interval`` per source). Lossless: the record and
    the event log already name these files."""

    name = "snapshots"
    picture = True
    lossless = True
    queue_size = 8

    def __init__(self, several_sources: bool) -> None:
        self.several = several_sources
        self.saved = 0

    def wants(self, result: Result) -> bool:
        return result.snapshot is not None

    def take(self, result: Result) -> None:
        stem = Path(result.snapshot)  # type: ignore[arg-type]  # set: wants() takes only results with a snapshot
        write_bytes(stem.with_name(stem.name + "_frame.png"), png(result.image))
        # a picture sink: the picture stage drew ``picture`` before handing the result here
        write_bytes(stem.with_name(stem.name + "_overlay.png"), png(result.picture))  # type: ignore[arg-type]
        write_json(stem.with_name(stem.name + ".json"), result.event(self.several))
        self.saved += 1
