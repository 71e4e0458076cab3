"""Basler industrial cameras (GigE Vision, USB3 Vision) through pypylon — the optional ``basler`` extra.

A source spec ``basler://[SELECTOR][?feature=value&...]``: SELECTOR is a serial number (``0815-0000``),
``model=acA1920-40gc``, ``name=<DeviceUserID>`` or nothing (the first camera). Settings (``CAMERA_SETTINGS``) are
applied after an optional saved feature file (``features=cam.pfs``, pylon's persistence format); each is checked
by the camera itself and a refused value is one error line naming the camera, the feature and the camera's range.

Triggers: ``trigger=off`` (free-run: the grab engine keeps only the newest frame; frames the loop had no time for
are counted as dropped), ``software`` (the box fires one software trigger per frame it wants — per PLC trigger
with ``run --trigger plc``, else per loop step) or ``Line1``..``Line3`` (hardware: every edge is a part; frames
are queued, none dropped by the box; frames the camera lost are counted). Every frame carries the camera's
serial, frame id and timestamp (``Frame.camera``) to the events, the record, MQTT and the PLC.

``PYLON_CAMEMU=N`` (set before the first use) makes pylon offer N emulated cameras; ``image_files=FOLDER`` plays
that folder's images through an emulated camera (pylon's ``ImageFilename`` feature) — what the tests use.
"""
from __future__ import annotations

import collections
import queue
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_stpm.common.errors import UserError
from edge_stpm.common.progress import console
from edge_stpm.runtime.loop.frames import Frame, Source
from edge_stpm.runtime.loop.pixels import supported, to_bgr
from edge_stpm.runtime.loop.sinks.base import put_newest

TRIGGERS = ("off", "software", "Line1", "Line2", "Line3")
ACTIVATIONS = ("RisingEdge", "FallingEdge")
# setting -> (type, GenICam feature names in order of preference: SFNC first, then older Basler names)
CAMERA_SETTINGS: dict[str, tuple[type, tuple[str, ...]]] = {
    "pixel_format": (str, ("PixelFormat",)),
    "exposure_us": (float, ("ExposureTime", "ExposureTimeAbs")),
    "gain": (float, ("Gain", "GainRaw")),
    "width": (int, ("Width",)),
    "height": (int, ("Height",)),
    "offset_x": (int, ("OffsetX",)),
    "offset_y": (int, ("OffsetY",)),
    "binning": (int, ("BinningHorizontal", "BinningVertical")),
    "frame_rate": (float, ("AcquisitionFrameRate", "AcquisitionFrameRateAbs")),
    "trigger": (str, ()),
    "activation": (str, ("TriggerActivation",)),
    "trigger_delay_us": (float, ("TriggerDelay", "TriggerDelayAbs")),
    "debounce_us": (float, ("LineDebouncerTime", "LineDebouncerTimeAbs")),
    "buffers": (int, ()),
    "features": (str, ()),
    "image_files": (str, ("ImageFilename",)),
}
BUFFERS_RANGE = (2, 256)


class CameraUnavailable(UserError):
    """The camera is not there now (not found, or it would not open), as opposed to a setting it refuses: a run
    with reconnecting on waits for it (sources.open_sources) instead of stopping."""


def _pylon() -> Any:
    try:
        from pypylon import genicam, pylon
    except ImportError:
        raise UserError("Basler cameras need pypylon: pip install 'edge-stpm[basler]'") from None
    return pylon, genicam


@dataclass
class CameraSpec:
    """A parsed ``basler://`` spec."""

    selector: dict[str, str] = field(default_factory=dict)  # {"serial"|"model"|"name": value} or {}
    settings: dict[str, Any] = field(default_factory=dict)
    text: str = ""

    @property
    def trigger(self) -> str:
        return self.settings.get("trigger", "off")


def plc_trigger_refusal(mode: str) -> UserError | None:
    """Why ``--trigger plc`` cannot drive a camera in this trigger mode (None: it can)."""
    if mode in ("off", "software"):
        return None
    return UserError(f"--trigger plc/http with a camera on hardware trigger ({mode}): the camera is triggered by its "
                     "line already; use trigger=software on the camera, or --trigger free-run")


def is_basler(spec: str) -> bool:
    return spec.startswith("basler://")


def parse_spec(spec: str) -> CameraSpec:
    try:
        u = urllib.parse.urlsplit(spec)
    except ValueError as exc:
        raise UserError(f"{spec}: not a camera spec ({exc})") from None
    if u.scheme != "basler":
        raise UserError(f"not a Basler camera spec: {spec}")
    sel = urllib.parse.unquote(u.netloc + u.path).strip("/")
    selector: dict[str, str] = {}
    if sel:
        key, _, value = sel.partition("=") if "=" in sel else ("serial", "", sel)
        if key not in ("serial", "model", "name") or not value:
            raise UserError(f"{spec}: select a camera by serial number, model=MODEL or name=USER_NAME")
        selector[key] = value
    settings: dict[str, Any] = {}
    for key, values in urllib.parse.parse_qs(u.query, keep_blank_values=True, strict_parsing=False).items():
        if key not in CAMERA_SETTINGS:
            raise UserError(f"{spec}: unknown camera setting {key!r}; choose from {', '.join(CAMERA_SETTINGS)}")
        kind = CAMERA_SETTINGS[key][0]
        try:
            settings[key] = kind(values[-1])
        except ValueError:
            what = {int: "a whole number", float: "a number"}.get(kind, kind.__name__)
            raise UserError(f"{spec}: {key} must be {what}, not {values[-1]!r}") from None
    if settings.get("trigger", "off") not in TRIGGERS:
        raise UserError(f"{spec}: trigger must be one of {', '.join(TRIGGERS)}")
    if settings.get("activation", "RisingEdge") not in ACTIVATIONS:
        raise UserError(f"{spec}: activation must be one of {', '.join(ACTIVATIONS)}")
    b = settings.get("buffers", 8)
    if not BUFFERS_RANGE[0] <= b <= BUFFERS_RANGE[1]:
        raise UserError(f"{spec}: buffers must be in {BUFFERS_RANGE[0]}..{BUFFERS_RANGE[1]}")
    for key in ("features", "image_files"):
        if key in settings and not Path(settings[key]).exists():
            raise UserError(f"{spec}: {key}: {settings[key]} not found")
    return CameraSpec(selector, settings, spec)


def list_cameras(open_each: bool = True) -> list[dict[str, Any]]:
    """Every camera pylon sees: vendor, model, serial, interface, user name; with ``open_each`` also the current
    pixel format and size (a camera another program holds shows ``in use``)."""
    pylon, genicam = _pylon()
    tl = pylon.TlFactory.GetInstance()
    out = []
    for d in tl.EnumerateDevices():
        row = {"vendor": d.GetVendorName(), "model": d.GetModelName(), "serial": d.GetSerialNumber(),
               "interface": d.GetDeviceClass(), "name": d.GetUserDefinedName(), "format": ""}
        if open_each:
            cam = None
            try:
                cam = pylon.InstantCamera(tl.CreateDevice(d))
                cam.Open()
                nm = cam.GetNodeMap()
                row["format"] = f"{nm.GetNode('PixelFormat').ToString()} {nm.GetNode('Width').GetValue()}×" \
                                f"{nm.GetNode('Height').GetValue()}"
            except genicam.GenericException:
                row["format"] = "in use"
            finally:
                if cam is not None and cam.IsOpen():
                    cam.Close()
        out.append(row)
    return out


def _present() -> str:
    try:
        cams = list_cameras(open_each=False)
    except UserError:
        return "none"
    return ", ".join(f"{c['model']} {c['serial']}" + (f" ({c['name']})" if c["name"] else "") for c in cams) or "none"


def _read(node: Any) -> Any:
    return node.ToString() if hasattr(node, "Symbolics") or not hasattr(node, "GetValue") else node.GetValue()


def _one_line(exc: Exception) -> str:
    """GenICam's messages end in ': ... thrown in node ... (file ..., line ...)'; keep the first sentence."""
    text = str(getattr(exc, "GetDescription", lambda: str(exc))())
    return text.split(" : ")[0].strip() or type(exc).__name__


class BaslerSource(Source):
    """A Basler camera as a loop source: grabbed on pylon's grab thread, read by ours into a queue."""

    live = True

    def __init__(self, spec: CameraSpec, reconnect_s: float = 10.0) -> None:
        self.pylon, self.genicam = _pylon()
        self.spec, self.reconnect_s = spec, reconnect_s
        self.mode = spec.trigger
        self.externally_triggered = False  # set by the PLC trigger wrapper: it fires the software triggers
        self.dropped = 0  # free-run frames the loop had no time for (grab engine skipped them)
        self.missed = 0  # frames lost in trigger mode (the camera or the grab engine reported them skipped)
        self.failed = 0  # buffers the camera delivered incomplete
        self.reconnects = 0
        self.lost_since: float | None = None
        self.cam = self._open()
        self.serial = self.cam.GetDeviceInfo().GetSerialNumber()
        self.fps = None
        self.q: queue.Queue[Frame] = queue.Queue(maxsize=1 if self.mode == "off" else 1024)
        self.stop = threading.Event()
        self.finished = False
        self.index = 0
        self.fired: collections.deque[float] = collections.deque(maxlen=1024)  # software triggers not yet answered
        self.thread = threading.Thread(target=self._run, daemon=True, name=f"basler-{self.serial}")
        self.thread.start()

    # --- opening and configuring -------------------------------------------------------------------------------
    def _find(self) -> Any:
        pylon = self.pylon
        tl = pylon.TlFactory.GetInstance()
        devices = list(tl.EnumerateDevices())
        key, value = next(iter(self.spec.selector.items()), (None, None))
        getter = {"serial": "GetSerialNumber", "model": "GetModelName", "name": "GetUserDefinedName"}
        match = [d for d in devices if key is None or getattr(d, getter[key])() == value]
        if not match:
            raise CameraUnavailable(f"{self.spec.text}: no such camera; connected: {_present()}")
        return tl.CreateDevice(match[0])

    def _open(self) -> Any:
        cam = self.pylon.InstantCamera(self._find())
        try:
            cam.Open()
        except self.genicam.GenericException as exc:
            raise CameraUnavailable(f"{self.spec.text}: cannot open the camera: {_one_line(exc)}") from None
        try:
            self._configure(cam)
            self._start(cam)
        except BaseException:
            cam.Close()
            raise
        return cam

    def _configure(self, cam: Any) -> None:
        """The feature file, then each setting (checked by the camera), then the trigger; ``applied`` keeps what
        the camera reports back for each setting (it may round: exposure to its time base, gain to its steps)."""
        s, nm = self.spec.settings, cam.GetNodeMap()
        self.applied: dict[str, Any] = {}
        if "features" in s:
            try:
                self.pylon.FeaturePersistence.Load(str(s["features"]), nm, True)
            except self.genicam.GenericException as exc:
                raise UserError(f"{self.spec.text}: feature file {s['features']}: {_one_line(exc)}") from None
        if "image_files" in s:  # the emulator's image player: no test pattern over it
            self._set(nm, "TestImageSelector", "Off", "image_files")
            self._set(nm, "ImageFileMode", "On", "image_files")
        order = ("pixel_format", "binning", "width", "height", "offset_x", "offset_y", "exposure_us", "gain",
                 "frame_rate", "image_files")
        for key in (k for k in order if k in s):
            if key == "pixel_format" and not supported(s[key]):
                raise UserError(f"{self.spec.text}: pixel format {s[key]} is not one the loop can convert")
            if key == "frame_rate":
                self._set(nm, "AcquisitionFrameRateEnable", True, key, optional=True)
            names = CAMERA_SETTINGS[key][1] if key == "binning" else (self._feature(nm, key),)
            for name in names:
                self._set(nm, name, s[key], key)
            self.applied[key] = _read(nm.GetNode(names[0]))
        fmt = nm.GetNode("PixelFormat").ToString()
        if not supported(fmt):
            raise UserError(f"{self.spec.text}: the camera's pixel format {fmt} is not one the loop can convert; "
                            f"set pixel_format=Mono8 or BGR8")
        self._set(nm, "TriggerSelector", "FrameStart", "trigger", optional=self.mode == "off")
        self._set(nm, "TriggerMode", "Off" if self.mode == "off" else "On", "trigger", optional=self.mode == "off")
        if self.mode != "off":
            self._set(nm, "TriggerSource", "Software" if self.mode == "software" else self.mode, "trigger")
            if self.mode != "software":
                self._set(nm, "TriggerActivation", s.get("activation", "RisingEdge"), "activation")
                if "debounce_us" in s:
                    self._set(nm, "LineSelector", self.mode, "debounce_us")
                    self._set(nm, self._feature(nm, "debounce_us"), s["debounce_us"], "debounce_us")
            if "trigger_delay_us" in s:
                self._set(nm, self._feature(nm, "trigger_delay_us"), s["trigger_delay_us"], "trigger_delay_us")
        cam.MaxNumBuffer.Value = int(s.get("buffers", 8))
        self.format = fmt

    def _feature(self, nm: Any, key: str) -> str:
        """The first of the setting's feature names this camera has (SFNC names first, then older Basler ones)."""
        names = CAMERA_SETTINGS[key][1]
        for n in names:
            node = nm.GetNode(n)
            if node is not None and self.genicam.IsAvailable(node):
                return n
        raise UserError(f"{self.spec.text}: this camera has no {key} setting ({' / '.join(names)})")

    def _set(self, nm: Any, name: str, value: Any, key: str, optional: bool = False) -> None:
        node = nm.GetNode(name)
        if node is None or not self.genicam.IsWritable(node):
            if optional:
                return
            raise UserError(f"{self.spec.text}: {key}: the camera has no writable {name}")
        try:
            if isinstance(value, str):
                symbolics = list(node.Symbolics) if hasattr(node, "Symbolics") else None
                if symbolics is not None and value not in symbolics:
                    raise UserError(f"{self.spec.text}: {key}: {value} is not available on this camera; it offers "
                                    f"{', '.join(symbolics)}")
                node.FromString(value)
            elif isinstance(value, bool) or not isinstance(node.GetValue(), int):
                node.SetValue(value)
            elif float(value) != int(value):
                raise UserError(f"{self.spec.text}: {key}={value}: {name} takes whole numbers")
            else:
                node.SetValue(int(value))
        except self.genicam.GenericException as exc:
            rng = ""
            if hasattr(node, "GetMin"):
                rng = f" (the camera allows {node.GetMin():g}..{node.GetMax():g})"
            raise UserError(f"{self.spec.text}: {key}={value} refused by {name}{rng}: {_one_line(exc)}") from None

    def _start(self, cam: Any) -> None:
        p = self.pylon
        if self.mode == "off":
            cam.OutputQueueSize.Value = 1
            cam.StartGrabbing(p.GrabStrategy_LatestImages)
        else:
            cam.StartGrabbing(p.GrabStrategy_OneByOne)

    # --- grabbing ---------------------------------------------------------------------------------------------
    def software_trigger(self, timeout_s: float = 2.0) -> bool:
        """Fire one software trigger when the camera is ready for it; False if it was not ready in time."""
        p = self.pylon
        try:
            if self.cam.WaitForFrameTriggerReady(int(timeout_s * 1000), p.TimeoutHandling_Return):
                self.fired.append(time.monotonic())
                self.cam.ExecuteSoftwareTrigger()
                return True
        except self.genicam.GenericException:
            pass
        return False

    def _run(self) -> None:
        p = self.pylon
        while not self.stop.is_set():
            try:
                r = self.cam.RetrieveResult(200, p.TimeoutHandling_Return)
            except self.genicam.GenericException:
                r = None
                if self.stop.is_set():
                    break
                if not self._reconnect():
                    break
                continue
            if r is None or not r.IsValid():
                if self.cam.IsCameraDeviceRemoved() or not self.cam.IsGrabbing():
                    if self.stop.is_set() or not self._reconnect():
                        break
                continue
            try:
                self._take(r)
            finally:
                r.Release()
        self.finished = True

    def _take(self, r: Any) -> None:
        t = time.monotonic()
        if self.mode == "software" and self.fired:
            t = self.fired.popleft()  # a triggered frame's capture time is its trigger's: latency = trigger → verdict
        skipped = int(r.GetNumberOfSkippedImages())
        if self.mode == "off":
            self.dropped += skipped
        else:
            self.missed += skipped
        if not r.GrabSucceeded():
            self.failed += 1
            return
        t0 = time.perf_counter()
        img = to_bgr(r.GetArray(), self.format)
        cam = {"serial": self.serial, "frame_id": int(r.GetID()), "block_id": int(r.GetBlockID()),
               "timestamp": int(r.GetTimeStamp())}
        frame = Frame(self.index, img, t, (time.perf_counter() - t0) * 1e3, camera=cam)
        self.index += 1
        if self.mode == "off":
            self.dropped += put_newest(self.q, frame)
        else:
            try:
                self.q.put_nowait(frame)
            except queue.Full:
                self.missed += 1

    def _reconnect(self) -> bool:
        self.lost_since = time.monotonic()
        console.print(f"note: camera {self.serial}: lost, reconnecting for up to {self.reconnect_s:g} s",
                      highlight=False, markup=False, soft_wrap=True)
        deadline = self.lost_since + self.reconnect_s
        delay = 0.2
        while not self.stop.is_set() and time.monotonic() < deadline:
            time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, 2.0)
            try:
                self.cam.Close()
                self.cam.DestroyDevice()
            except self.genicam.GenericException:
                pass
            try:
                self.cam = self._open()
            except UserError:
                continue
            self.reconnects += 1
            console.print(f"note: camera {self.serial}: reconnected after {time.monotonic() - self.lost_since:.1f} s",
                          highlight=False, markup=False, soft_wrap=True)
            self.lost_since = None
            return True
        self.end_reason = f"camera {self.serial} lost, no reconnect within {self.reconnect_s:g} s"
        return False

    def read(self, timeout: float = 5.0) -> Frame | None:
        """The next frame (free-run: the newest), waiting at most ``timeout`` s; None if none came (``ended`` says
        whether the camera is gone for good). In software-trigger mode without a PLC this fires the trigger."""
        if self.mode == "software" and not self.externally_triggered and self.q.empty() and not self.finished:
            self.software_trigger(min(timeout, 2.0))
        deadline = time.monotonic() + timeout
        while True:
            try:
                frame = self.q.get(timeout=min(0.2, max(0.0, deadline - time.monotonic())))
                self.ended = False
                return frame
            except queue.Empty:
                if self.finished and self.q.empty():
                    self.ended = True
                    return None
                if time.monotonic() >= deadline:
                    return None

    def stats(self) -> dict[str, Any]:
        return {"serial": self.serial, "trigger": self.mode, "pixel_format": self.format, "dropped": self.dropped,
                "missed": self.missed, "failed_buffers": self.failed, "reconnects": self.reconnects,
                "lost": self.lost_since is not None, "settings": dict(self.applied)}

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=3.0)
        try:
            if self.cam.IsGrabbing():
                self.cam.StopGrabbing()
            self.cam.Close()
        except self.genicam.GenericException:
            pass


def open_basler(spec: str, reconnect_s: float = 10.0) -> BaslerSource:
    return BaslerSource(parse_spec(spec), reconnect_s)

