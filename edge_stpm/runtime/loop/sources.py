"""Frame sources: camera index, Basler camera (``basler://``, see basler.py), video file, image folder, RTSP/HTTP URL
or GStreamer pipeline.

Live sources are read on their own thread that keeps only the newest frame, so the loop never falls
behind a camera; files and folders are read in order without drops (a bounded queue, also threaded).

A live source that is down when the run starts (``SourceUnavailable``: a camera still powering up after a plant
reboot, a stream not served yet) need not stop the others: ``open_sources`` puts a ``PendingSource`` in its place,
retried on its own thread until it opens (see there). Every line that names a spec goes through ``redact``.
"""
from __future__ import annotations

import contextlib
import json
import queue
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import cv2
import numpy as np
from rich.table import Table

from edge_stpm.common.errors import UserError
from edge_stpm.common.images import IMAGE_EXTS, list_images, read_image
from edge_stpm.common.progress import console
from edge_stpm.common.redact import redact
from edge_stpm.runtime.loop.basler import CameraUnavailable, list_cameras, open_basler, parse_spec
from edge_stpm.runtime.loop.frames import Frame, Source

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["Frame", "Source", "SourceUnavailable", "PendingSource", "open_source", "open_sources", "describe",
           "list_v4l2", "gstreamer_available"]

RETRY_MAX_S = 10.0  # a live source down at start is tried again at least this often (s), whatever --reconnect says


class SourceUnavailable(UserError):
    """A live source that is not there now (no such device, a stream that does not answer), as opposed to a spec
    or a setting that is wrong: with reconnecting on, ``open_sources`` retries it instead of stopping the run."""


def _note(text: str) -> None:
    """One ``note:`` line on the console, its URL passwords masked."""
    console.print(f"note: {redact(text)}", highlight=False, markup=False, soft_wrap=True)


def list_v4l2() -> list[dict[str, str]]:
    """V4L2 capture devices (Linux): ``--camera N`` for /dev/videoN, with the driver's name for it."""
    rows = []
    devices = [d for d in Path("/sys/class/video4linux").glob("video*") if d.name[5:].isdigit()]
    for dev in sorted(devices, key=lambda d: int(d.name[5:])):
        try:
            name = (dev / "name").read_text().strip()
        except OSError:
            name = ""
        rows.append({"source": f"--camera {dev.name[5:]}", "vendor": "", "model": name, "serial": "",
                     "interface": "V4L2", "name": f"/dev/{dev.name}", "format": ""})
    return rows


CAMERA_COLUMNS = ("source", "vendor", "model", "serial", "interface", "name", "format")


def print_cameras(out: Console, err: Console, fmt: str, open_each: bool) -> None:
    """``edge-stpm cameras``: the V4L2 devices and the Basler cameras (``open_each``: with their current format), as
    a table on ``out`` or JSON on stdout; a note on ``err`` when Basler cameras cannot be listed."""
    rows: list[dict[str, Any]] = list(list_v4l2())
    note = ""
    try:
        rows += [{"source": f"basler://{c['serial']}"} | c for c in list_cameras(open_each=open_each)]
    except UserError as exc:
        note = f"note: no Basler cameras listed: {exc}"
    if fmt == "json":
        sys.stdout.write(json.dumps(rows, indent=1) + "\n")
    else:
        t = Table(title=f"{len(rows)} cameras")
        for c in CAMERA_COLUMNS:
            t.add_column(c)
        for r in rows:
            t.add_row(*(str(r.get(c, "")) for c in CAMERA_COLUMNS))
        out.print(t)
    if note:
        err.print(note, highlight=False, markup=False, soft_wrap=True)


def gstreamer_available() -> bool:
    """Whether this OpenCV build has GStreamer (the PyPI wheels do not)."""
    for line in cv2.getBuildInformation().splitlines():
        if line.strip().startswith("GStreamer:"):
            return "YES" in line
    return False


def describe(spec: str) -> tuple[str, str]:
    """Classify a source spec: (kind, spec) with kind camera | basler | gstreamer | url | folder | video | image."""
    if spec.startswith("basler://"):
        return "basler", spec
    if spec.isdigit():
        return "camera", spec
    if "!" in spec:
        return "gstreamer", spec
    if "://" in spec:
        return "url", spec
    p = Path(spec)
    if p.is_dir():
        return "folder", spec
    if p.is_file():
        return ("image", spec) if p.suffix.lower() in IMAGE_EXTS else ("video", spec)
    raise UserError(f"source not found: {redact(spec)} (give a camera index, basler://SERIAL, a video file, an image "
                    "folder, a URL or a GStreamer pipeline)")


class FolderSource(Source):
    """Images of a folder (or one image), in name order, decoded on a thread ahead of the loop."""

    def __init__(self, paths: list[Path], loop: bool = False) -> None:
        if not paths:
            raise UserError("no images in the source folder")
        self.paths, self.loop = paths, loop
        self.unreadable = 0
        self.q: queue.Queue[Frame | None] = queue.Queue(maxsize=8)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _paths(self) -> Iterator[Path]:
        while True:
            yield from self.paths
            if not self.loop or self.unreadable >= len(self.paths):
                return

    def _run(self) -> None:
        for i, p in enumerate(self._paths()):
            if self.stop.is_set():
                break
            t0 = time.perf_counter()
            try:
                img = read_image(p)
            except UserError as exc:  # one unreadable file does not stop a folder; it is said, and counted
                self.unreadable += 1

                console.print(f"note: skipped: {exc}", highlight=False, markup=False, soft_wrap=True)
                continue
            _put(self.q, Frame(i, img, time.monotonic(), (time.perf_counter() - t0) * 1e3), self.stop)
        _put(self.q, None, self.stop)

    def read(self, timeout: float = 5.0) -> Frame | None:
        return _taken(self.q.get(), self)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5.0)


def _taken(frame: Frame | None, src: Source) -> Frame | None:
    """A file's frame as the loop takes it: its "capture" is now. A file frame waits in the read-ahead queue only
    because the loop is busy; that wait is not latency (the live page showed "verdict 119 ms" that was the queue).
    ``read_ms`` keeps its decode time."""
    src.ended = frame is None
    if frame is not None:
        frame.t_capture = time.monotonic()
    return frame


def _put(q: "queue.Queue[Frame | None]", item: Frame | None, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return
        except queue.Full:
            continue


class CaptureSource(Source):
    """cv2.VideoCapture on a thread. Files: in order, no drops. Live: only the newest frame is kept; a lost
    stream is reopened with backoff for up to ``reconnect_s`` seconds before the source ends."""

    def __init__(self, kind: str, spec: str, reconnect_s: float = 10.0, loop: bool = False) -> None:
        self.kind, self.spec, self.reconnect_s = kind, spec, reconnect_s
        self.loop = loop and kind == "video"
        self.loops = 0
        self.live = kind in ("camera", "url", "gstreamer")
        if kind == "gstreamer" and not gstreamer_available():
            raise UserError("this OpenCV has no GStreamer support (PyPI wheels never do): on a Jetson use JetPack's "
                            "OpenCV (python3-opencv) and uninstall opencv-python; or use --camera N")
        self.cap = self._open()
        if self.cap is None:
            what = f"camera {spec}" if kind == "camera" else spec
            raise SourceUnavailable(f"cannot open {redact(what)}: no such device or stream")
        fps = float(self.cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self.fps = fps if 0.5 <= fps <= 1000 else None
        self.stop = threading.Event()
        self.q: queue.Queue[Frame | None] = queue.Queue(maxsize=1 if self.live else 8)
        self.latest: Frame | None = None
        self.cond = threading.Condition()
        self.finished = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _open(self) -> cv2.VideoCapture | None:
        with _quiet_opencv():  # a missing camera is our one error line, not OpenCV's backend chatter
            return self._open_capture()

    def _open_capture(self) -> cv2.VideoCapture | None:
        if self.kind == "camera":
            cap = cv2.VideoCapture(int(self.spec))
        elif self.kind == "gstreamer":
            cap = cv2.VideoCapture(self.spec, cv2.CAP_GSTREAMER)
        else:
            cap = cv2.VideoCapture(self.spec)
        if not cap.isOpened():
            cap.release()
            return None
        if self.kind in ("camera",):
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        return cap

    def _reconnect(self) -> bool:
        what = f"camera {self.spec}" if self.kind == "camera" else self.spec
        _note(f"{what}: stream lost, reconnecting for up to {self.reconnect_s:g} s")
        t0 = time.monotonic()
        deadline = t0 + self.reconnect_s
        delay = 0.2
        while not self.stop.is_set() and time.monotonic() < deadline:
            time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, 2.0)
            if self.cap is not None:
                self.cap.release()
            self.cap = self._open()
            if self.cap is not None:
                self.reconnects += 1
                _note(f"{what}: reconnected after {time.monotonic() - t0:.1f} s")
                return True
        return False

    def _run(self) -> None:
        i = start = 0
        while not self.stop.is_set():
            t0 = time.perf_counter()
            ok, img = self.cap.read() if self.cap is not None else (False, None)
            if not ok or img is None:
                if self.live and self._reconnect():
                    continue
                if self.loop and i > start and self._rewind():  # a file that gave frames: again from its start
                    start = i
                    continue
                self.end_reason = (f"stream lost, no reconnect within {self.reconnect_s:g} s" if self.live
                                   else "end of stream")
                break
            frame = Frame(i, img, time.monotonic(), (time.perf_counter() - t0) * 1e3)
            i += 1
            if self.live:
                with self.cond:
                    if self.latest is not None:
                        self.dropped += 1
                    self.latest = frame
                    self.cond.notify()
            else:
                _put(self.q, frame, self.stop)
        if self.live:
            with self.cond:
                self.finished = True
                self.cond.notify()
        else:
            _put(self.q, None, self.stop)

    def _rewind(self) -> bool:
        if self.cap is not None:
            self.cap.release()
        self.cap = self._open()
        self.loops += self.cap is not None
        return self.cap is not None

    def read(self, timeout: float = 5.0) -> Frame | None:
        """Files: the next frame (blocking), None at the end. Live: the newest frame, waiting at most ``timeout``
        seconds; None if none came (``ended`` tells whether the stream is over or just quiet / reconnecting)."""
        if not self.live:
            return _taken(self.q.get(), self)
        deadline = time.monotonic() + timeout
        with self.cond:
            while self.latest is None and not self.finished and time.monotonic() < deadline:
                self.cond.wait(timeout=min(0.5, max(0.0, deadline - time.monotonic())))
            frame, self.latest = self.latest, None
            self.ended = frame is None and self.finished
            return frame

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=2.0)
        if self.cap is not None:
            self.cap.release()


@contextlib.contextmanager
def _quiet_opencv() -> Iterator[None]:
    log = getattr(getattr(cv2, "utils", None), "logging", None)
    if log is None:
        yield
        return
    level = log.getLogLevel()
    log.setLogLevel(log.LOG_LEVEL_SILENT)
    try:
        yield
    finally:
        log.setLogLevel(level)


class MemorySource(Source):
    """``n`` frames cycled from ``images`` in memory, each handed over the moment it is asked for (a camera that
    always has a fresh frame: the capture time is the hand-over). For ``bench`` and tests: no decode cost."""

    def __init__(self, images: list[np.ndarray], n: int) -> None:
        self.images, self.n, self.i = images, n, 0

    def read(self, timeout: float = 5.0) -> Frame | None:
        if self.i >= self.n:
            self.ended = True
            return None
        self.i += 1
        return Frame(self.i - 1, self.images[(self.i - 1) % len(self.images)], time.monotonic(), 0.0)


def open_source(spec: str, reconnect_s: float = 10.0, loop: bool = False) -> Source:
    """The source ``spec`` names; ``loop``: a video file or image folder plays again from its start when it ends.
    A live source that is not there now raises ``SourceUnavailable`` (a UserError), any other problem a UserError."""
    kind, spec = describe(spec)
    if kind == "folder":
        return FolderSource(list_images(Path(spec)), loop)
    if kind == "image":
        return FolderSource([Path(spec)], loop)
    if kind == "basler":
        try:
            return open_basler(spec, reconnect_s)
        except CameraUnavailable as exc:
            raise SourceUnavailable(str(exc)) from None
    return CaptureSource(kind, spec, reconnect_s, loop)


def open_sources(specs: list[str], reconnect_s: float = 10.0, loop: bool = False, wait_all: bool = False
                 ) -> list[Source]:
    """Every source of a run, in order. A live source that cannot be opened now (``SourceUnavailable``):

    - ``reconnect_s`` = 0: fail fast, as ever: its error (password masked) is the one UserError, the sources
      opened so far closed again;
    - ``reconnect_s`` > 0 and at least one other source opened: a ``PendingSource`` stands in for it: the run
      starts with the others, and it is tried again on its own thread every min(``reconnect_s``, ``RETRY_MAX_S``)
      seconds (one note a try) until it opens and joins the run;
    - ``reconnect_s`` > 0 and no source opened: with ``wait_all`` (a station, run by systemd: exiting would only
      restart it into the same wait, or park it in safe mode until someone reloads it, while a camera that is
      powering up just needs time) every one waits the same way, and each try says so in the log; without it
      (someone at a terminal with a wrong camera index wants to hear it now) the first error, as with 0.

    Any other error (a missing file, a refused setting, no GStreamer) fails at once whatever ``reconnect_s``."""
    opened: list[Source | None] = []
    down: list[SourceUnavailable | None] = []
    try:
        for spec in specs:
            try:
                opened.append(open_source(spec, reconnect_s, loop))
                down.append(None)
            except SourceUnavailable as exc:
                if reconnect_s <= 0:
                    raise
                opened.append(None)
                down.append(exc)
        first = next((exc for exc in down if exc is not None), None)
        if first is not None and all(s is None for s in opened) and not wait_all:
            raise first
    except BaseException:
        for src in opened:
            if src is not None:
                src.close()
        raise
    if first is not None and all(s is None for s in opened):
        _note(f"no source could be opened: waiting for them, each tried again every {min(reconnect_s, RETRY_MAX_S):g} s"
              " (reconnect 0 stops at start instead)")
    return [src if src is not None else PendingSource(spec, reconnect_s, loop, str(exc))
            for spec, src, exc in zip(specs, opened, down, strict=True)]


class PendingSource(Source):
    """A live source that was down at start (``open_sources``): tried again every min(``reconnect_s``,
    ``RETRY_MAX_S``) seconds on its own thread, never holding up the loop or the other sources, one note a try;
    once open it is the opened source (frames, counts, end), and a loss after that is reconnected as usual.

    Until then ``read`` gives None after ``timeout`` seconds without ending (the loop polls it like a quiet
    camera; the live view's health says the source delivers no frames after its start grace), ``waiting`` is
    True and ``open_attempts`` counts the failed tries (the one at start included). ``reconnects`` counts its
    late opening as one. A UserError other than "not there" once the device answers (a refused setting) ends it
    with that error as ``end_reason``."""

    live = True

    def __init__(self, spec: str, reconnect_s: float, loop: bool, error: str) -> None:
        self.spec, self.shown, self.reconnect_s, self.loop = spec, redact(spec), reconnect_s, loop
        self.every_s = min(reconnect_s, RETRY_MAX_S)
        self.open_attempts = 1
        self.t_down = time.monotonic()
        self.inner: Source | None = None
        self.failed: str | None = None
        self.mode = _trigger_mode(spec)  # a Basler camera's trigger mode, for the PLC trigger wrapper (else None)
        self._external = False
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.changed = threading.Event()  # set when it opened or failed for good
        _note(f"{error}; trying again every {self.every_s:g} s in the background")
        self.thread = threading.Thread(target=self._retry, daemon=True, name="pending-source")
        self.thread.start()

    def _retry(self) -> None:
        while not self.stop.wait(self.every_s):
            try:
                src = open_source(self.spec, self.reconnect_s, self.loop)
            except SourceUnavailable as exc:
                self._missed(str(exc))
                continue
            except UserError as exc:
                self.failed = redact(str(exc))
                _note(f"{self.shown}: {self.failed}; not tried again")
                self.changed.set()
                return
            except Exception as exc:  # noqa: BLE001 -- an unexpected failure is one more try, not a dead thread
                self._missed(f"{self.shown}: {type(exc).__name__}: {exc}")
                continue
            self._join(src)
            return

    def _missed(self, error: str) -> None:
        self.open_attempts += 1
        _note(f"{error}; still down after {time.monotonic() - self.t_down:.1f} s ({self.open_attempts} tries), "
              f"next try in {self.every_s:g} s")

    def _join(self, src: Source) -> None:
        with self.lock:
            if self.stop.is_set():  # closed while this try was opening
                src.close()
                return
            if self._external:
                src.externally_triggered = True  # type: ignore[attr-defined]  # a camera source's flag
            self.inner = src
        _note(f"{self.shown}: opened after {time.monotonic() - self.t_down:.1f} s ({self.open_attempts} failed "
              "tries); inspecting it from now on")
        self.changed.set()

    @property
    def waiting(self) -> bool:
        """True while it has not opened (and not failed for good)."""
        return self.inner is None and self.failed is None

    @property
    def externally_triggered(self) -> bool:
        return self._external

    @externally_triggered.setter
    def externally_triggered(self, value: bool) -> None:
        with self.lock:
            self._external = value
            if self.inner is not None:
                self.inner.externally_triggered = value  # type: ignore[attr-defined]  # a camera source's flag

    @property
    def dropped(self) -> int:  # type: ignore[override]  # properties over Source's plain attributes
        return self.inner.dropped if self.inner is not None else 0

    @property
    def reconnects(self) -> int:  # type: ignore[override]
        return self.inner.reconnects + 1 if self.inner is not None else 0

    @property
    def fps(self) -> float | None:  # type: ignore[override]
        return self.inner.fps if self.inner is not None else None

    @property
    def end_reason(self) -> str:  # type: ignore[override]
        if self.inner is not None:
            return self.inner.end_reason
        return self.failed or f"not opened yet ({self.open_attempts} tries)"

    def read(self, timeout: float = 5.0) -> Frame | None:
        """The opened source's next frame; before it opened None after ``timeout`` seconds (not ended)."""
        deadline = time.monotonic() + timeout
        if self.inner is None:
            self.changed.wait(timeout)
        inner = self.inner
        if inner is None:
            self.ended = self.failed is not None
            return None
        frame = inner.read(max(0.0, deadline - time.monotonic()))
        self.ended = inner.ended
        return frame

    def software_trigger(self, timeout_s: float = 2.0) -> bool:
        """A Basler camera's software trigger once it is open; False (not ready) before."""
        fire = getattr(self.inner, "software_trigger", None)
        return bool(fire(timeout_s)) if fire is not None else False

    def stats(self) -> dict[str, Any]:
        """The opened camera's own counts (``BaslerSource.stats``); {} before it opened or for other sources."""
        stats = getattr(self.inner, "stats", None)
        return stats() if stats is not None else {}

    def close(self) -> None:
        self.stop.set()
        self.changed.set()
        self.thread.join(timeout=2.0)  # a try blocked in OpenCV's open ends on its own; _join then closes what it got
        with self.lock:
            inner = self.inner  # kept: the run's summary reads its counts after the close
        if inner is not None:
            inner.close()


def _trigger_mode(spec: str) -> str | None:
    """A Basler spec's trigger mode (``off``, ``software``, ``Line1``…); None for any other source."""
    if not spec.startswith("basler://"):
        return None

    return parse_spec(spec).trigger
