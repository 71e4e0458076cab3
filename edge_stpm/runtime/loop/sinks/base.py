"""The sink interface and the runner that gives each sink its own thread and bounded queue."""
from __future__ import annotations

import queue
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from edge_stpm.common.redact import redact
from edge_stpm.runtime.inspector import InspectionResult

TIMING_WINDOW = 100_000  # latency medians and percentiles are over the newest this many frames (bounded 24/7)


@dataclass
class Result:
    """One inspected frame as it travels to the sinks. Times are ``time.monotonic()`` seconds: ``t_capture`` when
    the source produced the frame, ``t_verdict`` when inference ended, ``t_picture`` when the overlay was drawn.
    ``image`` is the inspected (ROI-cropped) uint8 BGR frame; ``picture`` the drawn overlay (picture sinks only).
    ``snapshot`` is the NG snapshot stem this result will be saved under (decided before the verdict is sent, so
    every verdict sink can name it). ``result_id`` is unique on this box and sortable (``<run start UTC>-<seq>``):
    the record, MQTT and the PLC outputs carry the same id. ``trigger_id`` is set in trigger mode; ``camera``
    carries what a camera reported (frame id, timestamp)."""

    seq: int
    source: int
    spec: str
    frame_index: int
    image: np.ndarray
    inspection: InspectionResult
    t_capture: float
    t_verdict: float
    wall_time: float
    read_ms: float
    infer_ms: float
    fps: float = 0.0
    result_id: str = ""
    trigger_id: int | None = None
    snapshot: str | None = None
    camera: dict[str, Any] = field(default_factory=dict)
    picture: np.ndarray | None = None
    t_picture: float | None = None

    @property
    def ng(self) -> bool:
        return self.inspection.ng

    @property
    def verdict_ms(self) -> float:
        return (self.t_verdict - self.t_capture) * 1e3

    def event(self, several_sources: bool = False) -> dict[str, Any]:
        """The JSON form every verdict sink shares (events file, record, MQTT)."""
        r = self.inspection
        ev: dict[str, Any] = {"result_id": self.result_id, "frame": self.frame_index, "time": self.wall_time,
                              "score": r.score, "normalised_score": r.normalised_score, "score_scale": r.score_scale,
                              "threshold": r.image_threshold, "verdict": r.verdict}
        if several_sources:
            ev = {"source": self.source, "source_spec": redact(self.spec)} | ev
        if self.trigger_id is not None:
            ev["trigger_id"] = self.trigger_id
        if self.camera:
            ev["camera"] = self.camera
        if self.snapshot:
            ev["saved"] = self.snapshot
        return ev


def put_newest(q: queue.Queue[Any], item: Any) -> int:
    """Put ``item`` without blocking, dropping the oldest queued items to make room; returns how many dropped."""
    dropped = 0
    while True:
        try:
            q.put_nowait(item)
            return dropped
        except queue.Full:
            try:
                q.get_nowait()
                dropped += 1
            except queue.Empty:
                pass


class Sink(ABC):
    """One output. ``take`` is called on the sink's own thread, one result at a time, in order.

    ``picture``: the sink needs the drawn overlay (it is then fed after drawing). ``lossless``: when its queue is
    full the pipeline waits instead of dropping (recordings of files, the record, the MQTT outbox: results
    promised to the line are never dropped). ``required``: a failure puts the loop in a visible error state
    (summary, /metrics, the PLC's error output) instead of being counted only. ``wants(result)``: whether this
    sink takes the result at all (NG-only sinks, one source's sinks)."""

    name = "sink"
    picture = False
    lossless = False
    required = False
    unjudged = False  # takes results no model judged (a station recipe with no model yet): collecting does
    queue_size = 64

    def open(self) -> None:  # noqa: B027 — an optional hook: a no-op by default, not abstract
        """Called once before the first result (on the loop's thread: raise UserError for a bad setting)."""

    def wants(self, result: Result) -> bool:
        return True

    batch_max = 1
    batch_linger_s = 0.0

    @abstractmethod
    def take(self, result: Result) -> None:
        """Handle one result."""

    def take_batch(self, results: list[Result]) -> None:
        """Handle the results that queued up meanwhile, or within ``batch_linger_s`` of the first (at most
        ``batch_max``, in order): sinks that write to disk take them in one transaction (one fsync) each."""
        for r in results:
            self.take(r)

    def close(self) -> None:  # noqa: B027 — an optional hook: a no-op by default, not abstract
        """Called once after the last result (on the sink's thread, after every queued result was taken)."""

    def gauges(self) -> dict[str, tuple[str, float]]:
        """The sink's own figures for /metrics and the summary: name → (description, value)."""
        return {}


@dataclass
class SinkStats:
    taken: int = 0
    dropped: int = 0
    failed: int = 0
    waited: int = 0
    last_error: str | None = None
    seconds: float = 0.0


class SinkRunner:
    """A sink on its own thread, fed through a bounded queue. ``offer`` never raises and, unless the sink is
    lossless, never blocks: when the queue is full the oldest queued result is dropped (counted). A failure of
    ``take`` is counted, reported once through ``log`` and the sink goes on with the next result."""

    _STOP = object()

    def __init__(self, sink: Sink, log: Callable[[str], None]) -> None:
        self.sink, self.log = sink, log
        self.stats = SinkStats()
        self.q: queue.Queue[Any] = queue.Queue(maxsize=max(1, sink.queue_size))
        self._reported = False
        self._closed = False
        self.thread = threading.Thread(target=self._run, name=f"sink-{sink.name}", daemon=True)

    def start(self) -> "SinkRunner":
        self.thread.start()
        return self

    @property
    def error(self) -> str | None:
        """The error state of a required sink (None when it has not failed)."""
        return self.stats.last_error if self.sink.required and self.stats.failed else None

    def offer(self, result: Result) -> None:
        if self._closed or not self.sink.wants(result):
            return
        if self.sink.lossless:
            try:
                self.q.put_nowait(result)
            except queue.Full:
                self.stats.waited += 1
                self.q.put(result)
            return
        self.stats.dropped += put_newest(self.q, result)

    def _run(self) -> None:
        stop = False
        while not stop:
            items = [self.q.get()]
            deadline = time.monotonic() + self.sink.batch_linger_s
            while len(items) < self.sink.batch_max and items[-1] is not self._STOP:
                try:  # what queues up meanwhile (or within the linger) goes in one batch: one commit, one fsync
                    left = deadline - time.monotonic()
                    items.append(self.q.get(timeout=left) if left > 0 else self.q.get_nowait())
                except queue.Empty:
                    break
            if items[-1] is self._STOP:
                items.pop()
                stop = True
            if not items:
                continue
            t0 = time.perf_counter()
            try:
                self.sink.take_batch(items)
                self.stats.taken += len(items)
            except Exception as exc:  # noqa: BLE001 — a sink's failure is counted and reported, never fatal
                self.stats.failed += getattr(exc, "lost", len(items))  # a retrying sink says what it finally lost
                self.stats.last_error = f"{type(exc).__name__}: {exc}"
                if not self._reported:
                    self._reported = True
                    self.log(f"sink {self.sink.name} failed ({self.stats.last_error}); further failures are "
                             "only counted"
                             + (" — this sink is required: error state set" if self.sink.required else ""))
            self.stats.seconds += time.perf_counter() - t0
        try:
            self.sink.close()
        except Exception as exc:  # noqa: BLE001
            self.stats.failed += 1
            self.stats.last_error = f"close: {type(exc).__name__}: {exc}"
            self.log(f"sink {self.sink.name} failed to close ({self.stats.last_error})")

    def close(self, timeout: float = 60.0) -> None:
        """Take everything queued, close the sink, join its thread (bounded by ``timeout``)."""
        if self._closed:
            return
        self._closed = True
        if self.thread.ident is None:
            self.thread.start()
        self.q.put(self._STOP)
        self.thread.join(timeout)
        if self.thread.is_alive():
            self.log(f"sink {self.sink.name} did not finish within {timeout:.0f} s; left behind")

    def summary(self) -> dict[str, Any]:
        s = self.stats
        return {"sink": self.sink.name, "taken": s.taken, "dropped": s.dropped, "failed": s.failed, "waited": s.waited,
                "required": self.sink.required, "last_error": s.last_error, "busy_s": round(s.seconds, 3)} | {
                    k: v for k, (_, v) in self.sink.gauges().items()}
