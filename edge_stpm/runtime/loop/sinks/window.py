"""Window sink: OpenCV windows, one per source. HighGUI must run on the loop's own thread, so this sink is not
run by a SinkRunner: ``take`` keeps the newest picture per source and ``pump`` (called by the loop) shows them
and returns the key pressed."""
from __future__ import annotations

import threading

import cv2
import numpy as np

from edge_stpm.runtime.loop.sinks.base import Result


class WindowSink:
    name = "window"
    picture = True

    def __init__(self, titles: list[str]) -> None:
        self.titles = titles
        self._latest: dict[int, np.ndarray] = {}
        self._lock = threading.Lock()
        self.last: np.ndarray | None = None

    def take(self, result: Result) -> None:
        with self._lock:
            self._latest[result.source] = result.picture  # type: ignore[assignment]  # a picture sink: drawn

    def pump(self) -> int:
        with self._lock:
            latest, self._latest = self._latest, {}
        for source, img in latest.items():
            cv2.imshow(self.titles[source], img)
            self.last = img
        return cv2.waitKey(1) & 0xFF

    def close(self) -> None:
        cv2.destroyAllWindows()
