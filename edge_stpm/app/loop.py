"""``edge-stpm run``: the camera loop — grab, inspect, overlay, show / record / save events."""
from __future__ import annotations

import json
import os
import queue
import signal
import statistics
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import cv2
import numpy as np

from ..errors import UserError
from ..data import crop_roi
from ..files import ensure_dir, write_bytes, write_json
from ..inspector import Inspector
from ..overlay import ALPHA
from .sources import Frame, Source


WARM_FRAMES = 100


@dataclass
class RunOptions:
    """Loop settings. ``roi`` is (x, y, w, h) in frame pixels; intervals in seconds."""

    headless: bool = False
    record: Path | None = None
    save_anomalies: Path | None = None
    events: Path | None = None
    max_frames: int | None = None
    roi: tuple[int, int, int, int] | None = None
    alpha: float = ALPHA
    anomaly_interval_s: float = 1.0
    record_fps: float = 15.0
    window: str = "edge-stpm"
    snapshot_dir: Path = Path(".")
    http: Any = None  # a started app.http.LiveView, or None
    checked: bool = False  # set by check_outputs (the CLI checks before loading the model; run() then skips it)


@dataclass
class RunSummary:
    frames: int = 0
    ng_frames: int = 0
    saved_anomalies: int = 0
    dropped: int = 0
    end_reason: str = ""
    seconds: float = 0.0
    fps: float = 0.0
    ms: dict[str, float] = field(default_factory=dict)
    rss_mb: dict[str, float] = field(default_factory=dict)
    record: str | None = None
    ng_indices: list[int] = field(default_factory=list)
    sources: list[dict[str, Any]] = field(default_factory=list)


def _rss_mb() -> float:
    import psutil

    return psutil.Process(os.getpid()).memory_info().rss / 2**20


class Recorder:
    """A video file written under a temporary name and renamed when finalised (end, Ctrl-C, SIGTERM).
    Encoding runs on its own thread (bounded queue, no frame dropped) so it overlaps inference."""

    def __init__(self, path: Path, fps: float) -> None:
        self.path, self.fps = Path(path), fps
        ensure_dir(self.path.parent)
        self.tmp = self.path.with_name(f".{self.path.stem}.part{self.path.suffix}")
        self.writer: cv2.VideoWriter | None = None
        self.frames = 0
        self.error: BaseException | None = None
        self.q: queue.Queue[np.ndarray | None] = queue.Queue(maxsize=8)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (img := self.q.get()) is not None:
            if self.error is None:
                try:
                    self._encode(img)
                except BaseException as exc:  # reported on the loop's thread at the next write
                    self.error = exc

    def write(self, img: np.ndarray) -> None:
        if self.error is not None:
            raise self.error
        self.q.put(img)

    def _encode(self, img: np.ndarray) -> None:
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
        self.q.put(None)
        self.thread.join()
        if self.error is not None:
            raise self.error
        if self.writer is None:
            return None
        self.writer.release()
        self.writer = None
        os.replace(self.tmp, self.path)
        return self.path


def letterbox(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``img`` scaled to fit ``size`` (w, h) with its aspect ratio kept, centred on black."""
    w, h = size
    s = min(w / img.shape[1], h / img.shape[0])
    nw, nh = max(1, round(img.shape[1] * s)), max(1, round(img.shape[0] * s))
    out = np.zeros((h, w, 3), np.uint8)
    x, y = (w - nw) // 2, (h - nh) // 2
    out[y : y + nh, x : x + nw] = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA)
    return out


class EventLog:
    """JSON Lines of NG frames, flushed per line so a power cut loses at most the line being written."""

    def __init__(self, path: Path) -> None:
        ensure_dir(Path(path).parent)
        self.fh: TextIO = open(path, "a", encoding="utf-8")

    def write(self, event: dict[str, Any]) -> None:
        self.fh.write(json.dumps(event) + "\n")
        self.fh.flush()

    def close(self) -> None:
        os.fsync(self.fh.fileno())
        self.fh.close()


def check_outputs(opts: RunOptions) -> None:
    """Create and check every output folder now (one UserError each), and decide window vs headless: a window
    without a display falls back to headless with a note instead of an abort inside Qt."""
    if opts.checked:
        return
    for folder in [p.parent for p in (opts.record, opts.events) if p] + ([opts.save_anomalies] if opts.save_anomalies else []):
        ensure_dir(folder)
    if opts.record and opts.record.suffix.lower() not in (".mp4", ".m4v", ".mov", ".avi", ".mkv"):
        raise UserError(f"--record {opts.record}: give a .mp4 or .avi file")
    if not opts.headless:
        ok, why = display_available()
        if not ok:
            from ..progress import console

            console.print(f"note: no display ({why}): running headless; use --record or --save-anomalies to see results",
                          highlight=False, soft_wrap=True)
            opts.headless = True
    opts.checked = True


def display_available() -> tuple[bool, str]:
    """Whether an OpenCV window can open here, checked without touching Qt/GTK (which abort without a display):
    $DISPLAY must name a reachable X server (its socket), or $WAYLAND_DISPLAY must be set; and this OpenCV must
    have a GUI backend (opencv-python-headless has none)."""
    import os
    import socket
    import sys

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


def _png(img: np.ndarray) -> bytes:
    return cv2.imencode(".png", img)[1].tobytes()


@dataclass
class Channel:
    """One source and its own outputs (recording, NG snapshots, window) and counts."""

    index: int
    source: Source
    spec: str
    record: Path | None
    anomalies: Path | None
    window: str
    recorder: Recorder | None = None
    frames: int = 0
    ng_frames: int = 0
    saved: int = 0
    last_saved: float = -1e9
    fps_ema: float = 0.0
    end_reason: str = ""
    ng_indices: list[int] = field(default_factory=list)


def _suffixed(path: Path | None, i: int, n: int) -> Path | None:
    """``out.mp4`` → ``out.src1.mp4`` when there are several sources (unchanged for one)."""
    if path is None or n == 1:
        return path
    return Path(path).with_name(f"{Path(path).stem}.src{i}{Path(path).suffix}")


def run(inspector: Inspector, sources: Source | list[Source], opts: RunOptions, on_frame: Any = None,
        specs: list[str] | None = None) -> RunSummary:
    """Run until every source ends, ``max_frames`` (per source), q, Ctrl-C or SIGTERM; recordings are always
    finalised. Several sources: one frame from each per step, inferred together as one batch; each source keeps its
    own recording (``out.src<i>.mp4``), NG snapshots (``DIR/src<i>/``), window and HTTP stream, and event lines are
    tagged with the source. A source that ends or is lost does not stop the others (live sources reconnect on their
    own thread)."""
    srcs = sources if isinstance(sources, list) else [sources]
    n = len(srcs)
    specs = specs or [f"source {i}" for i in range(n)]
    summary = RunSummary()
    stop = threading.Event()
    previous = None
    events: EventLog | None = None
    chans = [Channel(i, s, specs[i], _suffixed(opts.record, i, n),
                     (opts.save_anomalies / f"src{i}" if n > 1 else opts.save_anomalies) if opts.save_anomalies else None,
                     opts.window if n == 1 else f"{opts.window} [{i}] {specs[i]}") for i, s in enumerate(srcs)]
    try:
        check_outputs(opts)
        for c in chans:
            if c.anomalies:
                ensure_dir(c.anomalies)
            if c.record:
                c.recorder = Recorder(c.record, getattr(c.source, "fps", None) or opts.record_fps)
        events = EventLog(opts.events) if opts.events else None
    except BaseException:
        for c in chans:
            if c.recorder:
                c.recorder.finalise()
            c.source.close()
        raise
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    times: dict[str, list[float]] = {"read": [], "infer": [], "display": [], "total": []}
    show_overlay = True
    t_start = time.perf_counter()
    summary.rss_mb["start"] = _rss_mb()
    active = list(chans)
    poll = 0.02 if n > 1 else 5.0  # several sources: a live source with no new frame is skipped this step
    try:
        while active and not stop.is_set():
            t0 = time.perf_counter()
            batch: list[tuple[Channel, Frame, np.ndarray]] = []
            for c in list(active):
                if opts.max_frames is not None and c.frames >= opts.max_frames:
                    c.end_reason = f"--max-frames {opts.max_frames}"
                    active.remove(c)
                    continue
                frame = c.source.read(poll)
                if frame is None:
                    if c.source.ended:
                        c.end_reason = c.source.end_reason
                        active.remove(c)
                    continue
                img = crop_roi(frame.image, opts.roi, f"the frame of {c.spec}")
                batch.append((c, frame, img))
            if not batch:
                continue
            t1 = time.perf_counter()
            results = inspector.inspect_batch([img for _, _, img in batch])
            t2 = time.perf_counter()
            infer_ms = (t2 - t1) * 1e3
            quit_key = False
            for (c, frame, img), res in zip(batch, results):
                ts = time.perf_counter()
                dt_total = t2 - t0 + frame.read_ms / 1e3
                c.fps_ema = 1.0 / dt_total if c.fps_ema == 0 else 0.9 * c.fps_ema + 0.1 / max(dt_total, 1e-6)
                text = [f"{c.fps_ema:.1f} fps  infer {infer_ms:.1f} ms" + (f"  [{c.index}]" if n > 1 else ""),
                        f"read {frame.read_ms:.1f} ms  show {times['display'][-1] if times['display'] else 0:.1f} ms"]
                # the overlay is finished (contours on NG, bar, banner) only where someone or something looks:
                # a window, a recording, HTTP viewers, an NG event
                looked_at = (not opts.headless or c.recorder is not None or res.ng
                             or (opts.http is not None and opts.http.viewers > 0))
                shown = (res.overlay(img, opts.alpha, text) if show_overlay else img.copy()) if looked_at else None
                if res.ng:
                    c.ng_frames += 1
                    c.ng_indices.append(frame.index)
                    event = {"frame": frame.index, "time": time.time(), "score": res.score,
                             "normalised_score": res.normalised_score, "threshold": res.image_threshold,
                             "verdict": res.verdict}
                    if n > 1:
                        event = {"source": c.index, "source_spec": c.spec} | event
                    if c.anomalies and time.monotonic() - c.last_saved >= opts.anomaly_interval_s:
                        c.last_saved = time.monotonic()
                        stem = c.anomalies / f"ng_{frame.index:07d}"
                        write_bytes(stem.with_name(stem.name + "_frame.png"), _png(img))
                        write_bytes(stem.with_name(stem.name + "_overlay.png"), _png(shown))
                        write_json(stem.with_name(stem.name + ".json"), event)
                        c.saved += 1
                        event["saved"] = str(stem)
                    if events:
                        events.write(event)
                if c.recorder:
                    c.recorder.write(shown)
                if not opts.headless:
                    cv2.imshow(c.window, shown)
                if on_frame:
                    on_frame(frame, res)
                t3 = time.perf_counter()
                out_ms = (t3 - ts) * 1e3
                times["read"].append(frame.read_ms)
                times["infer"].append(infer_ms / len(batch))
                times["display"].append(out_ms)
                times["total"].append((t3 - t0) * 1e3 + frame.read_ms)
                if opts.http is not None:
                    opts.http.publish(frame.index, shown, res.ng, res.normalised_score, res.image_threshold, c.fps_ema,
                                      {"read": frame.read_ms, "infer": infer_ms, "output": out_ms,
                                       "total": times["total"][-1]}, c.source.dropped,
                                      getattr(c.source, "reconnects", 0), source=c.index)
                c.frames += 1
                summary.frames += 1
                if summary.frames == WARM_FRAMES:
                    summary.rss_mb["after_warmup"] = _rss_mb()
            if not opts.headless:
                key = cv2.waitKey(1) & 0xFF
                if key == ord("q"):
                    summary.end_reason = "q pressed"
                    quit_key = True
                if key == ord("s"):
                    for c, frame, _ in batch:
                        write_bytes(opts.snapshot_dir / f"snapshot_{c.index}_{frame.index:07d}.png", _png(shown))
                if key == ord("h"):
                    show_overlay = not show_overlay
            if quit_key:
                break
        else:
            if stop.is_set():
                summary.end_reason = "SIGTERM"
    except KeyboardInterrupt:
        summary.end_reason = "Ctrl-C"
    finally:
        for c in chans:
            if c.recorder:
                path = c.recorder.finalise()
                c.record = path
            c.source.close()
        if events:
            events.close()
        if not opts.headless:
            cv2.destroyAllWindows()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    if not summary.end_reason:
        reasons = sorted({c.end_reason for c in chans if c.end_reason})
        summary.end_reason = "; ".join(reasons) if n > 1 else (chans[0].end_reason or "")
    summary.seconds = time.perf_counter() - t_start
    summary.fps = summary.frames / summary.seconds if summary.seconds else 0.0
    summary.ms = {k: statistics.median(v) for k, v in times.items() if v}
    summary.rss_mb["end"] = _rss_mb()
    summary.dropped = sum(c.source.dropped for c in chans)
    summary.ng_frames = sum(c.ng_frames for c in chans)
    summary.saved_anomalies = sum(c.saved for c in chans)
    summary.ng_indices = chans[0].ng_indices if n == 1 else []
    summary.record = str(chans[0].record) if n == 1 and chans[0].record and Path(chans[0].record).is_file() else None
    summary.sources = [{"source": c.index, "spec": c.spec, "frames": c.frames, "ng_frames": c.ng_frames,
                        "dropped": c.source.dropped, "reconnects": getattr(c.source, "reconnects", 0),
                        "end_reason": c.end_reason or summary.end_reason,
                        "record": str(c.record) if c.record and Path(c.record).is_file() else None} for c in chans]
    return summary
