"""``edge-stpm run``: the camera loop as a pipeline of stages and sinks.

    capture (a thread per source) → prepare + infer (batched across sources, this thread)
        → result ──► verdict sinks at once (events, record, PLC, MQTT, HTTP counters; each its own thread)
        → picture stage (its own thread: overlay, HUD) ──► picture sinks (recording, NG snapshots, HTTP viewers,
          window on this thread)

The verdict never waits for a picture; a sink never waits for another sink and none blocks inference (each has
its own bounded queue; drops and failures are counted per sink). Queues are bounded everywhere: a live camera's
newest frame wins at capture (drops counted); a file source is read and recorded without a drop.
"""
from __future__ import annotations

import os
import signal
import socket
import statistics
import sys
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

import cv2
import numpy as np
import psutil

from edge_stpm.common.errors import UserError
from edge_stpm.common.files import ensure_dir, write_bytes
from edge_stpm.common.images import crop_roi
from edge_stpm.common.progress import console
from edge_stpm.common.redact import redact
from edge_stpm.runtime.backends.base import BackendUnavailable
from edge_stpm.runtime.inspector import Inspector
from edge_stpm.runtime.loop.frames import Frame, Source
from edge_stpm.runtime.loop.picture import PictureStage
from edge_stpm.runtime.loop.sinks.base import TIMING_WINDOW, Result, Sink, SinkRunner
from edge_stpm.runtime.loop.sinks.events import EventSink
from edge_stpm.runtime.loop.sinks.http import HttpPictureSink, HttpVerdictSink
from edge_stpm.runtime.loop.sinks.recording import RECORD_SUFFIXES, RecordingSink, recover_leftovers
from edge_stpm.runtime.loop.sinks.snapshots import SnapshotSink, png
from edge_stpm.runtime.loop.sinks.window import WindowSink
from edge_stpm.runtime.overlay import ALPHA

WARM_FRAMES = 100
NO_MODEL_FPS = 30.0  # a file or folder source whose frames judge nothing (no model yet) is read at most this fast


@dataclass
class RunOptions:
    """Loop settings. ``roi`` is (x, y, w, h) in frame pixels; intervals in seconds. ``sinks``: further verdict
    or picture sinks (the inspection record, MQTT, PLC outputs…), started and closed with the loop."""

    headless: bool = False
    record: Path | None = None
    save_anomalies: Path | None = None
    events: Path | None = None
    max_frames: int | None = None
    roi: tuple[int, int, int, int] | None = None
    alpha: float = ALPHA
    anomaly_interval_s: float = 1.0
    record_fps: float = 15.0
    workers: int = 1  # batches inferred at once on worker threads (one model session, called concurrently)
    record_segment_s: float = 60.0  # a new recording file every this many seconds (0: one file); see sinks/recording
    window: str = "edge-stpm"
    snapshot_dir: Path = Path(".")
    http: Any = None  # a started app.http.LiveView, or None
    sinks: list[Sink] = field(default_factory=list)
    on_error: Callable[[str], None] | None = None  # called once when a required sink starts failing (PLC error)
    on_inspection_error: Callable[[str], None] | None = None  # a frame could not be inferred (remote server down)
    stop: threading.Event | None = None  # set from outside (a sink that has what it needs): the loop ends
    checked: bool = False  # set by check_outputs (the CLI checks before loading the model; run() then skips it)


NG_INDICES_MAX = 100_000  # the summary lists the first this many NG frame indices (the record has them all)


@dataclass
class RunSummary:
    frames: int = 0
    ng_frames: int = 0
    saved_anomalies: int = 0
    dropped: int = 0
    failed_frames: int = 0  # frames read but not inferred (a remote model server did not answer)
    end_reason: str = ""
    seconds: float = 0.0  # the loop, first frame read to last verdict handed on (fps = frames / seconds)
    close_seconds: float = 0.0  # then: pictures drawn, sinks drained and closed, sources closed
    fps: float = 0.0
    ms: dict[str, float] = field(default_factory=dict)
    latency_ms: dict[str, dict[str, float]] = field(default_factory=dict)
    rss_mb: dict[str, float] = field(default_factory=dict)
    record: str | None = None
    ng_indices: list[int] = field(default_factory=list)
    sources: list[dict[str, Any]] = field(default_factory=list)
    sinks: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None


def _rss_mb() -> float:
    return psutil.Process(os.getpid()).memory_info().rss / 2**20


def check_outputs(opts: RunOptions) -> None:
    """Create and check every output folder now (one UserError each), and decide window vs headless: a window
    without a display falls back to headless with a note instead of an abort inside Qt."""
    if opts.checked:
        return
    for folder in ([p.parent for p in (opts.record, opts.events) if p]
                   + ([opts.save_anomalies] if opts.save_anomalies else [])):
        ensure_dir(folder)
    if opts.record and opts.record.suffix.lower() not in RECORD_SUFFIXES:
        raise UserError(f"--record {opts.record}: give a {', '.join(RECORD_SUFFIXES)} file")
    for target in (opts.record, opts.events):
        if target is not None and Path(target).is_dir():
            raise UserError(f"{target} is a folder: give a file name")
    if not opts.headless:
        ok, why = display_available()
        if not ok:
            console.print(f"note: no display ({why}): running headless; use --record or --save-anomalies to see "
                          "results", highlight=False, soft_wrap=True)
            opts.headless = True
    opts.checked = True


def display_available() -> tuple[bool, str]:
    """Whether an OpenCV window can open here, checked without touching Qt/GTK (which abort without a display):
    $DISPLAY must name a reachable X server (its socket), or $WAYLAND_DISPLAY must be set; and this OpenCV must
    have a GUI backend (opencv-python-headless has none)."""
    if sys.platform not in ("linux",) or os.environ.get("WAYLAND_DISPLAY"):
        return True, ""
    disp = os.environ.get("DISPLAY", "")
    if not disp:
        return False, "DISPLAY is not set"
    host, _, num = disp.rpartition(":")
    num = num.split(".")[0]
    if not num.isdigit():
        return False, f"DISPLAY={disp!r} is not a display name"
    if host in ("", "unix"):
        if not Path(f"/tmp/.X11-unix/X{num}").exists():
            return False, f"no X server socket for DISPLAY={disp}"
    else:
        try:
            socket.create_connection((host, 6000 + int(num)), timeout=1.0).close()
        except OSError:
            return False, f"cannot reach the X server of DISPLAY={disp}"
    gui = [line for line in cv2.getBuildInformation().splitlines() if line.strip().startswith("GUI:")]
    if gui and "NONE" in gui[0].upper():
        return False, "this OpenCV build has no GUI (opencv-python-headless)"
    return True, ""


@dataclass
class Channel:
    """One source and its counts."""

    index: int
    source: Source
    spec: str
    record: Path | None
    anomalies: Path | None
    frames: int = 0
    read: int = 0  # frames read, some perhaps still being inferred on a worker (--max-frames counts these)
    ng_frames: int = 0
    saved: int = 0
    last_saved: float = -1e9
    fps_ema: float = 0.0
    end_reason: str = ""
    recording: RecordingSink | None = None
    segments: list[str] = field(default_factory=list)  # the recording's finished files, in order
    ng_indices: list[int] = field(default_factory=list)


def _suffixed(path: Path | None, i: int, n: int) -> Path | None:
    """``out.mp4`` → ``out.src1.mp4`` when there are several sources (unchanged for one)."""
    if path is None or n == 1:
        return path
    return Path(path).with_name(f"{Path(path).stem}.src{i}{Path(path).suffix}")


def run_id() -> str:
    """A box-local, sortable run id: the run's start in UTC to the microsecond."""
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")


def _percentiles(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {}
    a = np.asarray(values)
    return {"p50": float(np.percentile(a, 50)), "p99": float(np.percentile(a, 99)), "n": int(a.size)}


def camera_stats(source: Source) -> dict[str, Any]:
    """What an industrial camera source counts (dropped, missed, failed buffers, reconnects); {} for other sources."""
    stats = getattr(source, "stats", None)
    return stats() if stats is not None else {}


def source_gauges(i: int, source: Source) -> dict[str, tuple[str, float]]:
    """An industrial camera's own counts (``stats()``) as gauges ``camera<i>_*`` for /metrics; for a source that was
    down at start (sources.PendingSource) ``source<i>_waiting`` and ``source<i>_open_attempts``."""
    out = pending_gauges(i, source)
    st = camera_stats(source)
    if not st:
        return out
    return out | {
        f"camera{i}_missed_frames": ("Frames lost in trigger mode (reported skipped by the camera's grab engine)",
                                     float(st["missed"])),
        f"camera{i}_failed_buffers": ("Buffers the camera delivered incomplete", float(st["failed_buffers"])),
        f"camera{i}_lost": ("1 while the camera is lost and being reconnected", float(st["lost"]))}


def pending_gauges(i: int, source: Source) -> dict[str, tuple[str, float]]:
    """A source that could not be opened at start and is tried again in the background: whether it still waits
    (1/0) and its failed tries so far; {} for any other source."""
    attempts = getattr(source, "open_attempts", None)
    if attempts is None:
        return {}
    return {f"source{i}_waiting": ("1 while a source that was down at start is not open yet (it is tried again)",
                                   float(bool(getattr(source, "waiting", False)))),
            f"source{i}_open_attempts": ("Failed tries to open a source that was down at start", float(attempts))}


class Pipeline:
    """One run of the loop over ``sources`` (see the module docstring)."""

    def __init__(self, inspector: Inspector, sources: list[Source], opts: RunOptions, specs: list[str],
                 on_frame: Callable[[Frame, Any], None] | None = None) -> None:
        self.insp, self.opts, self.on_frame = inspector, opts, on_frame
        n = len(sources)
        self.n = n
        self.chans = [Channel(i, s, redact(specs[i]), _suffixed(opts.record, i, n),
                              (opts.save_anomalies / f"src{i}" if n > 1 else opts.save_anomalies)
                              if opts.save_anomalies else None) for i, s in enumerate(sources)]
        self.stop = opts.stop if opts.stop is not None else threading.Event()
        self.signalled = False  # a SIGTERM set the stop event (else the station or a collection did)
        self.summary = RunSummary()
        # per-frame timings: the newest TIMING_WINDOW frames (a 24/7 run must not grow without bound)
        self.times: dict[str, deque[float]] = {k: deque(maxlen=TIMING_WINDOW)
                                               for k in ("read", "infer", "verdict", "loop")}
        self.seq = 0
        self.judged_last = True  # whether the last batch handed on judged anything (``idle``)
        self.run_id = run_id()
        self.window: WindowSink | None = None
        self.verdict_runners: list[SinkRunner] = []
        self.picture_runners: list[SinkRunner] = []
        self.pictures: PictureStage | None = None
        self._last_stats = 0.0
        self._error_told = False

    # --- setup and teardown ---------------------------------------------------------------------------------

    def log(self, text: str) -> None:
        console.print(f"warning: {text}", highlight=False, markup=False, soft_wrap=True)

    def note(self, text: str) -> None:
        console.print(f"note: {text}", highlight=False, markup=False, soft_wrap=True)

    def open(self) -> None:
        """Every sink opened (one UserError for a bad one, and everything opened so far closed again)."""
        o, several = self.opts, self.n > 1
        verdict: list[Sink] = [s for s in o.sinks if not s.picture]
        picture: list[Sink] = [s for s in o.sinks if s.picture]
        if o.events:
            verdict.insert(0, EventSink(o.events, several))
        if o.http is not None:
            verdict.append(HttpVerdictSink(o.http, [c.source for c in self.chans]))
            picture.append(HttpPictureSink(o.http))
        for c in self.chans:
            if c.anomalies:
                ensure_dir(c.anomalies)
            if c.record:
                for line in recover_leftovers(c.record):
                    self.note(line)
                c.recording = RecordingSink(c.index, c.record, getattr(c.source, "fps", None) or o.record_fps,
                                            lossless=not c.source.live, segment_s=o.record_segment_s)
                picture.append(c.recording)
        if o.save_anomalies:
            picture.append(SnapshotSink(several))
        opened: list[Sink] = []
        try:
            for s in verdict + picture:
                s.open()
                opened.append(s)
        except BaseException:
            for s in reversed(opened):
                s.close()
            raise
        self.verdict_runners = [SinkRunner(s, self.log).start() for s in verdict]
        self.picture_runners = [SinkRunner(s, self.log).start() for s in picture]
        if not o.headless:
            self.window = WindowSink([o.window if self.n == 1 else f"{o.window} [{c.index}] {c.spec}"
                                      for c in self.chans])
        lossless = any(not c.source.live for c in self.chans)
        self.pictures = PictureStage(o.alpha, self.picture_runners, self.window, lossless, several).start()

    def close(self) -> None:
        """Pictures drawn and handed on, every sink drained and closed, every source closed."""
        if self.pictures is not None:
            self.pictures.close()
        for r in self.verdict_runners + self.picture_runners:
            r.close()
        for c in self.chans:
            c.source.close()
            if c.recording is not None:
                c.record = c.recording.path
                c.segments = [str(p) for p in c.recording.segments]
        if self.window is not None:
            self.window.close()

    # --- the stages -----------------------------------------------------------------------------------------

    def read_batch(self, active: list[Channel], poll: float) -> list[tuple[Channel, Frame, np.ndarray]]:
        """One frame from each active source (a live source with nothing new this step is skipped)."""
        batch = []
        for c in list(active):
            if self.opts.max_frames is not None and c.read >= self.opts.max_frames:
                c.end_reason = f"--max-frames {self.opts.max_frames}"
                active.remove(c)
                continue
            frame = c.source.read(poll)
            if frame is None:
                if c.source.ended:
                    c.end_reason = c.source.end_reason
                    active.remove(c)
                continue
            c.read += 1
            batch.append((c, frame, crop_roi(frame.image, self.opts.roi, f"the frame of {c.spec}")))
        return batch

    def verdicts(self, batch: list[tuple[Channel, Frame, np.ndarray]], inspections: list[Any], t0: float,
                 infer_ms: float) -> None:
        """Results handed to every verdict sink at once, then to the picture stage."""
        now = time.monotonic()
        wall = time.time()
        self.judged_last = any(res.judged for res in inspections)
        for (c, frame, img), res in zip(batch, inspections, strict=False):
            dt = time.perf_counter() - t0 + frame.read_ms / 1e3
            c.fps_ema = 1.0 / dt if c.fps_ema == 0 else 0.9 * c.fps_ema + 0.1 / max(dt, 1e-6)
            r = Result(self.seq, c.index, c.spec, frame.index, img, res, frame.t_capture, now, wall, frame.read_ms,
                       infer_ms / len(batch), c.fps_ema, trigger_id=getattr(frame, "trigger_id", None),
                       result_id=f"{self.run_id}-{self.seq:09d}",
                       camera=getattr(frame, "camera", None) or {})
            self.seq += 1
            if res.ng:
                c.ng_frames += 1
                if len(c.ng_indices) < NG_INDICES_MAX:
                    c.ng_indices.append(frame.index)
                if c.anomalies and time.monotonic() - c.last_saved >= self.opts.anomaly_interval_s:
                    c.last_saved = time.monotonic()
                    r.snapshot = str(c.anomalies / f"ng_{frame.index:07d}")
                    c.saved += 1
            for runner in self.verdict_runners:
                if res.judged or runner.sink.unjudged:  # no model, no verdict: only collecting takes it
                    runner.offer(r)
            if self.on_frame:
                self.on_frame(frame, res)
            if self.wants_picture(c, r):
                self.pictures.offer(r)  # type: ignore[union-attr]  # set up whenever a picture can be wanted
            self.times["read"].append(frame.read_ms)
            self.times["infer"].append(infer_ms / len(batch))
            self.times["verdict"].append(r.verdict_ms)
            c.frames += 1
            self.summary.frames += 1
            if self.summary.frames == WARM_FRAMES:
                self.summary.rss_mb["after_warmup"] = _rss_mb()

    def wants_picture(self, c: Channel, r: Result) -> bool:
        """A picture is drawn only where someone or something looks: a window, or a picture sink that wants this
        result (a recording of its source, an NG snapshot, HTTP viewers or an NG thumbnail for them, a user's own)."""
        return self.window is not None or any(run.sink.wants(r) for run in self.picture_runners)

    def keys(self) -> bool:
        """The window's keys: q quits (True), s saves the shown picture, h hides the overlay."""
        if self.window is None:
            return False
        key = self.window.pump()
        if key == ord("q"):
            self.summary.end_reason = "q pressed"
            return True
        if key == ord("s") and self.window.last is not None:
            write_bytes(self.opts.snapshot_dir / f"snapshot_{self.summary.frames:07d}.png", png(self.window.last))
        if key == ord("h") and self.pictures is not None:
            self.pictures.show_overlay = not self.pictures.show_overlay
        return False

    def publish_stats(self, force: bool = False) -> None:
        """About once a second: a required sink's failure to ``on_error`` (once), per-sink counts and the error
        state to the HTTP view."""
        if not force and time.monotonic() - self._last_stats < 1.0:
            return
        self._last_stats = time.monotonic()
        error = self.error()
        if error and not self._error_told and self.opts.on_error is not None:
            self._error_told = True
            self.opts.on_error(error)
        if self.opts.http is None:
            return
        self.opts.http.sinks(self.sink_stats(), error)
        for r in self.verdict_runners + self.picture_runners:
            for name, (doc, value) in r.sink.gauges().items():
                self.opts.http.gauge(name, doc, value)
        for c in self.chans:
            for name, (doc, value) in source_gauges(c.index, c.source).items():
                self.opts.http.gauge(name, doc, value)
        self.opts.http.gauge("failed_frames", "Frames read but not inferred (the model server did not answer)",
                             float(self.summary.failed_frames))

    def sink_stats(self) -> list[dict[str, Any]]:
        pics = [self.pictures.summary()] if self.pictures is not None else []
        return pics + [r.summary() for r in self.verdict_runners + self.picture_runners]

    def error(self) -> str | None:
        for r in self.verdict_runners + self.picture_runners:
            if r.error:
                return f"{r.sink.name}: {r.error}"
        return None

    # --- the loop -------------------------------------------------------------------------------------------

    def infer(self, batch: list[tuple[Channel, Frame, np.ndarray]]) -> tuple[list[Any] | BackendUnavailable, float]:
        """One batch through the model (on a worker thread when there are several): (inspections or the remote
        server's failure, inference ms)."""
        t1 = time.perf_counter()
        try:
            out: list[Any] | BackendUnavailable = self.insp.inspect_batch([img for _, _, img in batch])
        except BackendUnavailable as exc:  # a remote model server did not answer: these frames failed
            out = exc
        return out, (time.perf_counter() - t1) * 1e3

    def settle(self, batch: list[tuple[Channel, Frame, np.ndarray]], t0: float,
               done: tuple[list[Any] | BackendUnavailable, float]) -> None:
        """A finished batch's results handed on (in the order the batches were read), or its frames counted failed."""
        inspections, infer_ms = done
        if isinstance(inspections, BackendUnavailable):
            self.summary.failed_frames += len(batch)
            if self.opts.on_inspection_error is not None:
                self.opts.on_inspection_error(str(inspections))
            return
        self.verdicts(batch, inspections, t0, infer_ms)
        self.times["loop"].append((time.perf_counter() - t0) * 1e3)

    def loop(self) -> None:
        """Read a batch, infer it, hand on its results. With ``workers`` > 1 up to that many batches are inferred at
        once on worker threads (one model session, called concurrently) and their results handed on in reading
        order: the next frame is read while the previous ones are inferred."""
        active = list(self.chans)
        poll = 0.02 if self.n > 1 else 5.0  # several sources: a live source with no new frame is skipped this step
        workers = max(1, self.opts.workers)
        pool = ThreadPoolExecutor(workers, thread_name_prefix="infer") if workers > 1 else None
        inflight: deque[tuple[list[Any], float, Future]] = deque()
        try:
            while (active or inflight) and not self.stop.is_set():
                batch: list[Any] = []
                if active and len(inflight) < workers:
                    t0 = time.perf_counter()
                    batch = self.read_batch(active, poll)
                    if batch and pool is None:
                        self.settle(batch, t0, self.infer(batch))
                        self.idle(batch, t0)
                    elif batch and pool is not None:  # (a batch with no pool went to the branch above)
                        inflight.append((batch, t0, pool.submit(self.infer, batch)))
                if inflight and (len(inflight) >= workers or not batch):
                    b, t, fut = inflight.popleft()
                    self.settle(b, t, fut.result())
                    self.idle(b, t)
                self.publish_stats()
                if self.keys():
                    return
        finally:
            for b, t, fut in inflight:  # stopped early: what was read is still inferred and handed on
                self.settle(b, t, fut.result())
            if pool is not None:
                pool.shutdown(wait=True)
        if self.stop.is_set():  # a SIGTERM, or whoever holds the stop event (the station, a collection's count)
            self.summary.end_reason = "SIGTERM" if self.signalled else "stopped"

    def idle(self, batch: list[tuple[Channel, Frame, np.ndarray]], t0: float) -> None:
        """No model yet (nothing judged) and only file or folder sources, which nothing paces: wait out one frame
        interval — the video's own rate, else ``NO_MODEL_FPS`` — instead of spinning at a thousand frames a second.
        A camera paces itself; a judged frame goes as fast as the model."""
        if self.judged_last or any(c.source.live for c, _, _ in batch):
            return
        interval = max(1.0 / (c.source.fps or NO_MODEL_FPS) for c, _, _ in batch)
        self.stop.wait(max(0.0, t0 + interval - time.perf_counter()))

    def _on_sigterm(self, *_: Any) -> None:
        self.signalled = True
        self.stop.set()

    def run(self) -> RunSummary:
        previous = None
        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGTERM, self._on_sigterm)
        t_start = time.perf_counter()
        t_end = t_start
        self.summary.rss_mb["start"] = _rss_mb()
        try:
            self.loop()
        except KeyboardInterrupt:
            self.summary.end_reason = "Ctrl-C"
        finally:
            t_end = time.perf_counter()
            self.close()
            self.publish_stats(force=True)
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
        self.summary.close_seconds = time.perf_counter() - t_end
        return self.finish(t_end - t_start)

    def finish(self, seconds: float) -> RunSummary:
        s, chans = self.summary, self.chans
        if not s.end_reason:
            reasons = sorted({c.end_reason for c in chans if c.end_reason})
            s.end_reason = "; ".join(reasons) if self.n > 1 else (chans[0].end_reason or "")
        s.seconds = seconds
        s.fps = s.frames / seconds if seconds else 0.0
        s.ms = {k: statistics.median(v) for k, v in self.times.items() if v}
        pictures = self.pictures.latencies if self.pictures is not None else []
        if pictures:
            s.ms["picture"] = statistics.median(pictures)
        s.latency_ms = {"verdict": _percentiles(self.times["verdict"]), "picture": _percentiles(pictures)}
        s.rss_mb["end"] = _rss_mb()
        s.dropped = sum(c.source.dropped for c in chans)
        s.ng_frames = sum(c.ng_frames for c in chans)
        s.saved_anomalies = sum(c.saved for c in chans)
        s.ng_indices = chans[0].ng_indices if self.n == 1 else []
        s.record = str(chans[0].record) if self.n == 1 and chans[0].record and Path(chans[0].record).is_file() else None
        s.sinks = self.sink_stats()
        s.error = self.error()
        s.sources = [{"source": c.index, "spec": c.spec, "frames": c.frames, "ng_frames": c.ng_frames,
                      "dropped": c.source.dropped, "reconnects": getattr(c.source, "reconnects", 0),
                      **_pending_row(c.source),
                      "end_reason": c.end_reason or s.end_reason,
                      **({"camera": st} if (st := camera_stats(c.source)) else {}),
                      "record": str(c.record) if c.record and Path(c.record).is_file() else None,
                      "record_segments": c.segments} for c in chans]
        return s


def _pending_row(source: Source) -> dict[str, Any]:
    """A summary row's extra keys for a source that was down at start: its failed tries to open, and whether it
    never opened during the run."""
    attempts = getattr(source, "open_attempts", None)
    if attempts is None:
        return {}
    return {"open_attempts": attempts, "never_opened": bool(getattr(source, "waiting", False))}


def run(inspector: Inspector, sources: Source | list[Source], opts: RunOptions, on_frame: Any = None,
        specs: list[str] | None = None) -> RunSummary:
    """Run until every source ends, ``max_frames`` (per source), q, Ctrl-C or SIGTERM; recordings are always
    finalised. Several sources: one frame from each per step, inferred together as one batch; each source keeps its
    own recording (``out.src<i>.mp4``), NG snapshots (``DIR/src<i>/``), window and HTTP stream, and event lines are
    tagged with the source. A source that ends or is lost does not stop the others (live sources reconnect on their
    own thread), nor does one that was down at start (``sources.open_sources`` puts a ``PendingSource`` in its
    place: polled like a quiet camera until it opens, so a run with one never ends by itself while it waits —
    ``max_frames`` counts per source). Specs are shown with their passwords masked (``redact``): window titles,
    results (events, record, MQTT), the summary."""
    srcs = sources if isinstance(sources, list) else [sources]
    pipe = Pipeline(inspector, srcs, opts, specs or [f"source {i}" for i in range(len(srcs))], on_frame)
    try:
        check_outputs(opts)
        pipe.open()
    except BaseException:
        pipe.close()
        raise
    return pipe.run()
