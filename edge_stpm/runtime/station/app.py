"""One run, assembled in one place: ``edge-stpm run`` (a model, or a station file) builds its ``RunConfig`` here
and calls ``run``; ``edge-stpm collect`` (``collect``: no model, its collect sink) and ``edge-stpm demo`` (a
``RunConfig`` of its own) run through the same steps. report.py prints what they say, the command line only parses.

The steps follow the data: sources and trigger (``_sources``) → the line's outputs and PLC servers, which the
inspector's recipes are wired to (``_line``) → the inspector: one model, or every recipe of a station
(``_inspector``) → the sinks (evidence, drift, drop folder) → the web server (``_web``) → the loop (``_loop``). Every
step that opens something is undone, in reverse order, when a later one fails.
"""
from __future__ import annotations

import dataclasses
import signal
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from edge_stpm.common.bind import parse_bind
from edge_stpm.common.errors import UserError
from edge_stpm.common.files import data_dir
from edge_stpm.common.threads import available_cores
from edge_stpm.runtime.backends.select import default_workers
from edge_stpm.runtime.inspector import Inspector
from edge_stpm.runtime.learn.collect import (
    CollectSettings,
    CollectSink,
    CollectStats,
    PassThrough,
    StationCollect,
    contact_sheet,
)
from edge_stpm.runtime.line.opcua import secure as secure_opcua
from edge_stpm.runtime.line.setup import LineSettings, check_sources, setup as setup_line
from edge_stpm.runtime.loop.pipeline import RunOptions, check_outputs, run as run_loop
from edge_stpm.runtime.loop.sinks.evidence import EvidencePolicy, EvidenceSink
from edge_stpm.runtime.loop.sources import open_sources
from edge_stpm.runtime.station import drift, dropfolder
from edge_stpm.runtime.station.audit import Audit
from edge_stpm.runtime.station.config import load, run_values
from edge_stpm.runtime.station.control import StationControl
from edge_stpm.runtime.station.created import merge
from edge_stpm.runtime.station.recipes import StationInspector, load_recipes
from edge_stpm.runtime.station.service import Watchdog
from edge_stpm.runtime.station.store import ModelStore
from edge_stpm.runtime.web.auth import Sessions
from edge_stpm.runtime.web.live import LiveView
from edge_stpm.runtime.web.server import ServerSettings

Say = Callable[[str], None]


def parse_roi(text: Optional[str]) -> Optional[tuple[int, int, int, int]]:
    """``x,y,w,h`` in pixels (None: the whole frame); one UserError otherwise."""
    if not text:
        return None
    try:
        x, y, w, h = (int(v) for v in text.split(","))
    except ValueError:
        raise UserError(f"--roi must be x,y,w,h in pixels, not {text!r}") from None
    if w <= 0 or h <= 0 or x < 0 or y < 0:
        raise UserError("--roi needs x, y >= 0 and w, h > 0")
    return x, y, w, h


@dataclass(frozen=True)
class RunConfig:
    """Everything a run uses, typed: the defaults, a station file's keys (``config.RUN_KEYS`` maps each onto its
    field) and ``run``'s flags, which set the fields of the same names and win over the file (``settle``);
    docs/commands.md says each one's meaning, range and default."""

    model: Optional[Path]  # None only with a station whose first recipe has no model yet
    camera: list[int] = field(default_factory=list)
    source: list[str] = field(default_factory=list)
    backend: str = "auto"
    precision: Optional[str] = None
    threads: Optional[int] = None
    workers: Optional[int] = None
    threshold: Optional[float] = None
    roi: Optional[tuple[int, int, int, int]] = None
    headless: bool = False
    record: Optional[Path] = None
    record_segment: float = 60.0
    save_anomalies: Optional[Path] = None
    anomaly_interval: float = 1.0
    events: Optional[Path] = None
    max_frames: Optional[int] = None
    reconnect: float = 10.0
    loop: bool = False
    alpha: float = 0.6
    summary_json: Optional[Path] = None
    http: Optional[str] = None
    http_token: Optional[str] = None
    http_fps: float = 15.0
    http_cert: Optional[Path] = None
    http_key: Optional[Path] = None
    http_self_signed: bool = False
    http_insecure: bool = False
    history_db: Path = field(default_factory=lambda: data_dir() / "history.db")
    no_history: bool = False
    history_keep_days: float = 90.0
    history_max_mb: float = 2048.0
    mqtt: Optional[str] = None
    mqtt_topic: str = "edge-stpm/{host}/{source}"
    mqtt_ca: Optional[Path] = None
    mqtt_outbox: Path = field(default_factory=lambda: data_dir() / "mqtt-outbox.db")
    outbox_max: int = 100_000
    modbus: Optional[str] = None
    opcua: Optional[str] = None
    opcua_user: Optional[str] = None
    opcua_security: Optional[str] = None
    opcua_cert: Optional[Path] = None
    opcua_key: Optional[Path] = None
    opcua_self_signed: bool = False
    trigger: str = "free-run"
    frame_path: str = "auto"
    station: Any = None  # runtime.station.config.Station, with a station file
    config_path: Optional[Path] = None
    quiet: bool = False  # no line saying which backend runs and why (the demo)

    @property
    def specs(self) -> list[str]:
        """The sources as ``open_sources`` takes them: cameras first, then the other sources."""
        return [str(c) for c in self.camera or []] + [str(x) for x in self.source or []]

    @property
    def history(self) -> Optional[Path]:
        return None if self.no_history else self.history_db


def settle(given: dict[str, Any], config: Optional[Path], on_command_line: Callable[[str], bool]) -> RunConfig:
    """``run``'s flags (``given``, by option name), or with a station file its keys where no flag was given on the
    command line (``on_command_line(name)``): a flag overrides the file's key, never the other way round."""
    names = {f.name for f in dataclasses.fields(RunConfig)}
    given = {k: v for k, v in given.items() if k in names}
    if config is None:
        if given.get("model") is None:
            raise UserError("give a model: --model M (or a station file with its recipes: --config station.toml)")
        return RunConfig(**(given | {"camera": given.get("camera") or [], "source": given.get("source") or [],
                                     "roi": parse_roi(given.get("roi"))}))

    if given.get("model") is not None:
        raise UserError("--model and --config: a station file's recipes name the models; give one or the other")
    st = load(config)
    p = given | {k: v for k, v in run_values(st).items() if not on_command_line(k)}
    if not (on_command_line("camera") or on_command_line("source")):
        p["camera"] = [x.camera for x in st.sources if x.camera is not None]
        p["source"] = [x.spec for x in st.sources if x.spec is not None]
    overrides = {k: given[k] for k in ("threshold", "precision") if on_command_line(k)} | (
        {"roi": parse_roi(given.get("roi"))} if on_command_line("roi") else {})
    st = st.model_copy(update={"recipes": [r.model_copy(update=overrides) for r in st.recipes]})
    first = st.initial().model  # None: the first recipe has no model yet (it learns one on the box)
    return RunConfig(**(p | {"station": st, "config_path": config, "model": Path(first) if first else None,
                             "threshold": None, "roi": None, "precision": None,
                             "camera": p.get("camera") or [], "source": p.get("source") or []}))


@dataclass(frozen=True)
class Parts:
    """What a command brings to its run instead of what ``RunConfig`` would build: ``edge-stpm collect``'s inspector
    that judges nothing, its collect sink (first among the verdict sinks) and the event that ends the run when the
    sink has its count."""

    inspector: Any = None  # None: RunConfig's model, or a station's recipes, loaded
    sinks: tuple[Any, ...] = ()
    stop: Optional[threading.Event] = None


@dataclass
class RunResult:
    """What the command prints after a run: the loop's summary, which frame path ran, the backend, the sources."""

    summary: Any
    path_note: str
    backend: dict[str, Any]
    specs: list[str]

    def check_frames(self) -> None:
        """``edge-stpm run`` that read no frame at all is an error (collect says "0 frames kept" instead)."""
        s = self.summary
        if s.frames == 0 and s.end_reason in ("end of stream", ""):
            raise UserError(f"no frame could be read from {', '.join(self.specs)} (corrupt or unsupported files?)")


@dataclass
class _Run:
    """The collaborators of one run, opened step by step (``run``) and closed in reverse (``close``)."""

    cfg: RunConfig
    say: Say
    warn: Say
    error: Say
    parts: Parts = Parts()
    specs: list[str] = field(default_factory=list)
    opts: Any = None
    line: Any = None
    insp: Any = None
    station: Any = None  # the StationInspector with a station file (its recipes and control), else None
    watcher: Any = None
    sources: list[Any] = field(default_factory=list)

    def _sources(self) -> list[str]:
        specs = self.cfg.specs
        if not specs:
            raise UserError("give a source: --camera N or --source SPEC (repeat either for several; or sources in "
                            "the station file)")
        check_sources(specs, self.cfg.trigger)
        if self.cfg.trigger == "http" and not self.cfg.http:
            raise UserError("--trigger http needs the HTTP server: --http HOST:PORT (POST /trigger)")
        return specs

    def _outputs(self) -> None:
        c = self.cfg
        self.opts = RunOptions(headless=c.headless, record=c.record, save_anomalies=c.save_anomalies,
                               events=c.events, max_frames=c.max_frames, roi=c.roi, alpha=c.alpha,
                               anomaly_interval_s=c.anomaly_interval, record_segment_s=c.record_segment,
                               workers=c.workers or 1, sinks=list(self.parts.sinks), stop=self.parts.stop)

    def _line(self, n_sources: int) -> None:
        """The record, MQTT and the PLC servers (the line's side of the run), and the station's evidence."""
        c = self.cfg
        self.line = setup_line(LineSettings(c.model, c.history, c.history_keep_days, c.history_max_mb, c.mqtt,
                                            c.mqtt_topic, c.mqtt_ca, c.mqtt_outbox, c.outbox_max, c.modbus,
                                            c.opcua, c.opcua_user, c.trigger), n_sources, self.warn)
        if c.opcua:
            secure_opcua(self.line.servers, c.opcua_security, c.opcua_cert, c.opcua_key, bool(c.opcua_self_signed),
                         data_dir() / "opcua", self.warn)
        self.opts.sinks += self.line.sinks + _evidence(c)
        self.opts.on_error = self.line.on_error
        self.opts.on_inspection_error = self.line.on_inspection_error
        for note in self.line.notes:
            self.warn(note)

    def _inspector(self, n_sources: int) -> None:
        """The run's Inspector (a station: every recipe's, preloaded, the PLC and HTTP able to select one) and its
        worker count (the default chosen for the sources, and said); or the inspector the command brought."""
        c = self.cfg
        if self.parts.inspector is not None:
            self.insp = self.parts.inspector
            return
        threads, workers, choice = c.threads, c.workers, None
        if workers is None and c.model is None:  # a station whose first recipe has no model yet
            workers = 1
        elif workers is None and c.model is not None:
            workers, why, choice = default_workers(c.model, c.backend, c.precision, n_sources,
                                                   c.trigger == "free-run", threads, available_cores())
            if why:
                self.say(f"workers: {why}")
        assert workers is not None
        if workers > 1 and threads is None:
            threads = max(1, available_cores() // workers)
        if c.station is not None:
            self.insp = self.station = _station_inspector(c, threads, self.line, self.say)
        else:
            assert c.model is not None  # settle: a run without a station has a model
            self.insp = Inspector.load(c.model, c.backend, c.threshold, c.precision, threads, verbose=not c.quiet,
                                       frame_path=c.frame_path, choice=choice)
        if workers > 1 and not self.insp.backend.concurrent:
            raise UserError(f"--workers {workers} needs a backend that can infer on several threads at once (ONNX "
                            f"Runtime); {self.insp.backend.name} cannot: use --workers 1")
        self.opts.workers = workers

    def _web(self, specs: list[str]) -> None:
        """The HTTP server (live view, API, web app), wired to the recipes, the PLC and the collect sink."""
        c, opts = self.cfg, self.opts

        recipes = self.station.recipes if self.station is not None else None
        control = self.station.control if self.station is not None else None
        tracker = drift.attach(c.station, recipes, opts.sinks, self.warn)
        self.watcher = dropfolder.start(c.station, control, self.say)
        if not c.http:
            return
        parts = {"plc": self.line.plc if c.trigger == "http" else None,  # POST /trigger drives the handshake
                 "recipes": recipes, "recipe_plc": self.line.plc,  # POST /recipe selects through them
                 "control": control, "drift": tracker, "triggered": c.trigger != "free-run",
                 "collect": next((s for s in opts.sinks if s.name == "collect-on-demand"), None)}
        opts.http = _live_view(parse_bind(c.http), c, self.insp, specs, parts, self.say)

    def open(self) -> list[Any]:
        """Every step in the order data flows, each undone in reverse (``close``) when a later one fails; the
        sources as the loop takes them (the loop closes them)."""
        self.specs = self._sources()
        self._outputs()
        try:
            self._line(len(self.specs))
            check_outputs(self.opts)  # every bad option fails here, before a model, a source or a thread exists
            self._inspector(len(self.specs))
            self._web(self.specs)
            # a camera down at start is retried like one lost later (reconnect > 0); the others start now
            self.sources += open_sources(self.specs, self.cfg.reconnect, self.cfg.loop,
                                         wait_all=self.cfg.station is not None)
            looped = self.line.wrap(self.sources)  # may refuse a source for trigger mode
            self.line.start()
            if self.opts.http is not None:
                self.opts.http.started()  # /healthz: 503 "starting" until here
        except BaseException:
            self.close()
            raise
        self.sources = []  # the loop closes its sources
        return looped

    def close(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()
        for opened in self.sources:
            opened.close()
        if self.line is not None:
            self.line.close()
        if self.opts is not None and self.opts.http is not None:
            self.opts.http.close()
        if self.insp is not None:
            self.insp.close()


def run(cfg: RunConfig, say: Say, warn: Say, error: Say, parts: Parts = Parts()) -> RunResult:
    """One run from its configuration to its summary (``edge-stpm run``; collect and demo bring ``parts`` and their
    own ``RunConfig``)."""
    r = _Run(cfg, say, warn, error, parts)
    looped = r.open()
    service = _service_hooks(cfg, r.station.control if r.station is not None else None, r.opts, say, error)
    try:
        s = run_loop(r.insp, looped, r.opts, specs=r.specs)
    finally:
        service()
        r.close()
    return RunResult(s, r.insp.path_note, r.insp.backend.describe(), r.specs)


def collect(c: CollectSettings, say: Say, warn: Say, error: Say,
            on_kept: Optional[Callable[[CollectStats], None]] = None) -> tuple[CollectStats, Optional[Path], Any]:
    """``edge-stpm collect``: this run with no model — every frame OK with score 0 (a PLC's handshake runs as it
    will with a model), no record — its collect sink first, ended when the sink has its count (or the source ends,
    ``max_frames`` are read, Ctrl-C). Returns what was kept, the contact sheet and the loop's summary."""
    if len(c.specs) != 1:
        raise UserError("collect takes exactly one --source or --camera (one station camera at a time)")
    done = threading.Event()
    sink = CollectSink(c.out / "train" / "good", c.count, c.min_change, done, on_kept)
    cfg = RunConfig(None, source=list(c.specs), headless=True, roi=c.roi, max_frames=c.max_frames,
                    reconnect=c.reconnect, no_history=True, modbus=c.modbus, opcua=c.opcua, opcua_user=c.opcua_user,
                    trigger=c.trigger, http=c.http, http_token=c.http_token)
    r = run(cfg, say, warn, error, Parts(PassThrough(), (sink,), done))
    return sink.stats, contact_sheet(sink.stats.kept, c.out / "contact_sheet.jpg"), r.summary


def _evidence(c: RunConfig) -> list[Any]:
    """A station's evidence sink (full frames and heatmaps of NG results, a sample of OK ones) beside the record,
    and the collect-on-demand sink."""
    st, history = c.station, c.history
    if st is None or history is None or not st.evidence.enabled:
        return []

    e = st.evidence
    return [EvidenceSink(EvidencePolicy(e.folder or data_dir() / "evidence", e.budget_mb, e.ng_days, e.ok_days,
                                        e.ok_every, e.min_free_mb), history),
            StationCollect((e.folder or data_dir() / "evidence").parent / "collect", min_free_mb=e.min_free_mb)]


def _service_hooks(c: RunConfig, control: Any, opts: Any, say: Say, error: Say) -> Callable[[], None]:
    """What a station run under systemd gets: READY / WATCHDOG (while /healthz would say 200) / STOPPING, and
    SIGHUP re-reading the station file (applied between two frames, or refused in one line). Returns the undo."""
    dog = Watchdog(lambda: opts.http.health()[0] if opts.http is not None else True)
    path = c.config_path
    if control is None or path is None or threading.current_thread() is not threading.main_thread():
        return dog.close

    def reload() -> None:
        try:
            changed = control.reload(load(path), "SIGHUP")
            say(f"config reloaded: {', '.join(changed) or 'nothing changed'}")
        except UserError as exc:
            for line in getattr(exc, "lines", [str(exc)]):
                error(line)

    before = signal.signal(signal.SIGHUP, lambda *_: threading.Thread(target=reload, name="reload").start())

    def undo() -> None:
        signal.signal(signal.SIGHUP, before)
        dog.close()

    return undo


def _live_view(bind: Any, c: RunConfig, insp: Any, specs: list[str], parts: dict[str, Any], say: Say) -> Any:
    """The started HTTP view of a run (its URL said, never its token); with a station its API and web app;
    ``parts``: the run's collaborators the server reads (``LiveView``'s keyword arguments)."""
    b, token, control = insp.backend, c.http_token, parts["control"]
    settings = ServerSettings(c.http_cert, c.http_key, bool(c.http_self_signed), data_dir() / "tls",
                              bool(c.http_insecure))
    sessions = None
    if control is not None:
        h = control.station.http
        settings.trusted_proxies, settings.never_lock = tuple(h.trusted_proxies), tuple(h.never_lock)
        settings.max_upload_mb, settings.max_viewers = h.max_upload_mb, h.max_viewers
        tokens = {"viewer": h.viewer_token or token, "operator": h.operator_token, "engineer": h.engineer_token}
        sessions = Sessions({k: v for k, v in tokens.items() if v}, h.idle_lock_minutes * 60,
                            open_viewer=bind.loopback and not token and not h.viewer_token)
    view = LiveView(bind, token, {"model": Path(c.model).name if c.model else "no model yet", "backend": b.name,
                                  "precision": b.precision,
                                  "backbone": b.metadata.get("backbone", "?"), "size": b.image_size},
                    stream_fps=c.http_fps, sources=specs, history=c.history, server=settings, sessions=sessions,
                    starting=True, **parts)
    view.start()
    say(f"live view: {view.url}" + (" (log in with the token)" if token else ""))
    return view


def _station_inspector(c: RunConfig, threads: Optional[int], line: Any, say: Say) -> Any:
    """Every recipe of the station loaded; the PLC's recipe register (and OPC UA, HTTP) select among them; the model
    store, deploy / rollback and the audit log (in the record) ready for the HTTP API."""
    st = c.station
    audit = Audit(c.history, st.audit.syslog)
    store = ModelStore(st.store.folder())
    recipes = load_recipes(_with_created(st, store, say), st.initial(), c.backend, threads, c.frame_path, log=say)
    if line.plc is not None:
        line.plc.connect_recipes(recipes)  # register 11 / OPC UA SelectRecipe → this recipe set

    def changed(a: Any, b: Any) -> None:
        audit.write("line", "recipe", b.cfg.name, {"index": a.cfg.index, "name": a.cfg.name},
                    {"index": b.cfg.index, "name": b.cfg.name})

    recipes.on_change.append(changed)
    control = StationControl(recipes, store, audit, c.backend, threads, c.frame_path, st.http.engineer_token,
                             station=st)
    control.adopt(log=say)
    control.restore_settings(say)
    audit.write("station", "start", st.initial().name, None, recipes.summary())
    return StationInspector(recipes, control)


def _with_created(st: Any, store: Any, say: Say) -> list[Any]:
    """The station file's recipes and those created on the box (the store's recipes.json; the file wins a name or an
    index: runtime/station/created.py). A damaged recipes.json is said in one line and the file's recipes run."""
    try:
        entries = store.created()
    except UserError as exc:
        say(f"error: {exc}; the station file's recipes run")
        return list(st.recipes)
    return merge(list(st.recipes), entries, say)
