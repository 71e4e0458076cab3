"""The picture stage: overlays drawn on their own thread, after the verdict has gone out, for the picture sinks."""
from __future__ import annotations

import queue
import threading
import time
from collections import deque
from typing import Any

from edge_stpm.runtime.loop.sinks.base import TIMING_WINDOW, Result, SinkRunner, put_newest


class PictureStage:
    """Draws the overlay (colour near/above the threshold, contours on NG, colour bar, banner and HUD) of each
    result it is offered and hands it to the picture sinks and the window. Its queue is bounded: lossless when
    a source is a file (recordings must hold every frame: the loop then waits), else the oldest waiting result is
    dropped (counted) so the pictures stay current. Drawing frame N overlaps the inference of frame N+1."""

    name = "pictures"
    _STOP = object()

    def __init__(self, alpha: float, runners: list[SinkRunner], window: Any, lossless: bool, several: bool = False,
                 size: int = 4) -> None:
        self.several = several
        self.alpha, self.runners, self.window, self.lossless = alpha, runners, window, lossless
        self.q: queue.Queue[Any] = queue.Queue(maxsize=size)
        self.show_overlay = True
        self.drawn = self.dropped = self.failed = 0
        self.last_error: str | None = None
        self.latencies: deque[float] = deque(maxlen=TIMING_WINDOW)
        self.draw_ms: deque[float] = deque(maxlen=TIMING_WINDOW)
        self.thread = threading.Thread(target=self._run, name="pictures", daemon=True)

    def start(self) -> "PictureStage":
        self.thread.start()
        return self

    def offer(self, r: Result) -> None:
        if self.lossless:
            self.q.put(r)
            return
        self.dropped += put_newest(self.q, r)

    def hud(self, r: Result) -> list[str]:
        draw = self.draw_ms[-1] if self.draw_ms else 0.0
        return [f"{r.fps:.1f} fps  infer {r.infer_ms:.1f} ms" + (f"  [{r.source}]" if self.several else ""),
                f"read {r.read_ms:.1f}  verdict {r.verdict_ms:.1f}  draw {draw:.1f} ms"]

    def _run(self) -> None:
        while (r := self.q.get()) is not self._STOP:
            t0 = time.perf_counter()
            try:
                r.picture = (r.inspection.overlay(r.image, self.alpha, self.hud(r)) if self.show_overlay
                             else r.image.copy())
            except Exception as exc:  # noqa: BLE001 — a picture that cannot be drawn is counted, the loop goes on
                self.failed += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                continue
            r.t_picture = time.monotonic()
            self.draw_ms.append((time.perf_counter() - t0) * 1e3)
            self.latencies.append((r.t_picture - r.t_capture) * 1e3)
            self.drawn += 1
            for runner in self.runners:
                runner.offer(r)
            if self.window is not None:
                self.window.take(r)

    def close(self) -> None:
        self.q.put(self._STOP)
        self.thread.join(120)

    def summary(self) -> dict[str, Any]:
        return {"sink": self.name, "taken": self.drawn, "dropped": self.dropped, "failed": self.failed, "waited": 0,
                "required": False, "last_error": self.last_error, "busy_s": round(sum(self.draw_ms) / 1e3, 3)}
