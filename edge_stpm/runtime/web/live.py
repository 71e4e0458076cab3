"""Live view and metrics over HTTP while ``edge-stpm run`` inspects: aiohttp on its own thread and event loop,
Prometheus metrics through ``prometheus_client``.

Endpoints: ``/`` a small page (live overlay, verdict, score, FPS, latency, counts, model, recent NG thumbnails),
``/stream.mjpg`` multipart MJPEG of the overlay, ``/status.json`` the same numbers, ``/metrics`` Prometheus text,
``/ng/<id>.jpg`` the recent NG snapshots, ``/history.json`` the newest results from the inspection record.

Viewers never slow the loop: ``publish`` only swaps a reference to the newest overlay; JPEG encoding happens on
the server thread, once per new frame for all viewers, at most ``stream_fps`` times a second, and only while
someone watches. Each viewer gets the newest frame and may miss frames; a client that stops reading is dropped
after ``send_timeout_s``, a vanished one at its next write. Safe by default: loopback unless told otherwise, and a
non-loopback bind needs a token and TLS (or ``insecure``). Who may call what is the one route table of
``runtime/web/server.py`` (credentials in headers only: ``X-Session`` or ``Authorization: Bearer``).
"""
from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import socket
import threading
import time
from typing import Any

import cv2
import numpy as np
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest

from edge_stpm.common.bind import Bind
from edge_stpm.common.errors import UserError
from edge_stpm.common.redact import redact
from edge_stpm.contract.options import small_int
from edge_stpm.runtime.line.plc import ERROR_TEXT
from edge_stpm.runtime.loop.sinks.record import VERDICTS, query
from edge_stpm.runtime.station.drift import DriftCollector
from edge_stpm.runtime.web.auth import Sessions
from edge_stpm.runtime.web.keys import ROLE, SIGNED_UNTIL, WHO
from edge_stpm.runtime.web.server import Guard, ServerSettings, build_app, check_listen, route_table, ssl_context

# read/infer: per-stage cost; verdict/picture: capture → verdict handed on, capture → overlay drawn
STAGES = ("read", "infer", "verdict", "picture")
LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)


PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>edge-stpm live view</title>
<link rel="stylesheet" href="/static/view.css"></head><body>
<form id="login" hidden><label>token <input id="token" type="password" autocomplete="current-password"></label>
<button>show</button> <span id="login-error"></span></form>
<div><span id="verdict" class="v">…</span> <span id="score"></span></div>
<div id="streams"></div>
<table><tr><td>FPS</td><td id="fps"></td><td>latency</td><td id="lat"></td></tr>
<tr><td>frames</td><td id="frames"></td><td>NG</td><td id="ng"></td><td>dropped</td><td id="dropped"></td></tr>
<tr><td>model</td><td colspan="5" id="model"></td></tr></table>
<div>recent NG</div><div class="thumbs" id="thumbs"></div>
<script src="/static/view.js"></script></body></html>"""


class LiveView:
    """The HTTP view of one run. ``publish`` from the loop thread; everything else runs on the server thread."""

    def __init__(self, bind: Bind, token: str | None, model: dict[str, Any], stream_fps: float = 15.0,
                 keep_ng: int = 8, send_timeout_s: float = 5.0, sources: list[str] | None = None,
                 history: Any = None, server: Any = None, sessions: Any = None, *, plc: Any = None,
                 recipes: Any = None, recipe_plc: Any = None, control: Any = None, drift: Any = None,
                 collect: Any = None, triggered: bool = False, starting: bool = False) -> None:
        """The run's collaborators come in here (``runtime/station/app.py`` passes them): ``plc`` the handshake
        POST /trigger drives (run --trigger http), ``recipes`` / ``recipe_plc`` what POST /recipe selects through,
        ``control`` a station's deploy / rollback / audit, ``drift`` its drift tracker, ``collect`` the
        collect-on-demand sink, ``triggered`` whether sources deliver only when triggered, ``starting`` whether the
        run still opens its sources and PLC servers (until ``started``)."""
        self.plc: Any = plc  # run --trigger http: the handshake state POST /trigger drives
        self.recipes: Any = recipes  # run --config with recipes: POST /recipe selects one (runtime/station/recipes.py)
        self.recipe_plc: Any = recipe_plc  # ... through the PLC handshake's state when there is one (error 6 shared)
        self.control: Any = control  # a station: deploy, rollback, models, audit (runtime/station/control.py)
        # roles and sessions (runtime/web/auth.py); a plain run's one token is the operator's (it may trigger)
        self.sessions: Any = sessions or Sessions({"operator": token} if token else {},
                                                  open_viewer=bind.loopback and not token, open_as="operator")
        self.server = server or ServerSettings()
        self.guard: Any = None  # runtime/web/server.Guard, made at start
        self.triggered = triggered  # trigger mode: a source delivers only when triggered (healthz does not wait)
        self.t_start = time.monotonic()
        self.starting = starting  # the run's sources are not open or its PLC servers do not listen yet
        self._last_frame: dict[int, float] = {}
        if not bind.loopback and not token and not (sessions is not None and sessions.tokens):
            raise UserError(f"--http {bind.host}:{bind.port} is not a loopback address: give --http-token TOKEN "
                            "(every endpoint then requires it), or bind to 127.0.0.1")
        check_listen(bind.host, bind.loopback, self.server)

        self.bind, self.token, self.model = bind, token, model
        self.history = history  # the inspection record's path, for /history.json
        self.stream_fps, self.send_timeout_s = stream_fps, send_timeout_s
        self.registry = CollectorRegistry()
        r = self.registry
        self.sources = [redact(x) for x in sources or ["source 0"]]  # shown on pages and /healthz: no passwords
        self.m_frames = Counter("edge_stpm_frames", "Frames inspected", ["source"], registry=r)
        self.m_ng = Counter("edge_stpm_ng_frames", "Frames judged NG", ["source"], registry=r)
        self.m_dropped = Counter("edge_stpm_dropped_frames", "Frames a live source dropped (newest-frame policy)",
                                 ["source"], registry=r)
        self.m_reconnects = Counter("edge_stpm_source_reconnects", "Times a lost source was reopened", ["source"],
                                    registry=r)
        self.m_latency = Histogram("edge_stpm_stage_seconds", "Per-frame latency by stage", ["stage"],
                                   buckets=LATENCY_BUCKETS, registry=r)
        self.m_fps = Gauge("edge_stpm_fps", "End-to-end frames per second (moving average)", ["source"], registry=r)
        self.m_viewers = Gauge("edge_stpm_stream_viewers", "Open /stream.mjpg connections", registry=r)
        self.m_sink = Gauge("edge_stpm_sink_results", "Results per sink: taken, dropped (queue full), failed",
                            ["sink", "outcome"], registry=r)
        self.m_error = Gauge("edge_stpm_error", "1 while a required sink (a line output) is failing", registry=r)
        self.m_extra: dict[str, Any] = {}
        self.drift: Any = drift  # runtime/station/drift.DriftTracker of a station run (the health page, /metrics)
        self.collect: Any = collect  # runtime/learn/collect.StationCollect: good parts collected on demand
        if drift is not None:
            r.register(DriftCollector(drift))
        Info("edge_stpm_model", "The model being run", registry=r).info({k: str(v) for k, v in model.items()})
        self._lock = threading.Lock()
        self._latest: dict[int, tuple[int, np.ndarray]] = {}
        self._latest_meta: dict[int, dict[str, Any]] = {}  # the verdict of the frame in _latest (the same result)
        self._event: dict[int, int | None] = {}  # per source: the NG event (part) running now, by its first frame
        self._frame_event: collections.OrderedDict[tuple[int, int], int] = collections.OrderedDict()
        self._page_seen = 0.0  # the web app's live page polled (it counts as a viewer for 2 s)
        self._status: dict[str, Any] = {"verdict": None, "normalised_score": None, "threshold": None, "fps": 0.0,
                                        "frames": 0, "ng": 0, "dropped": 0, "reconnects": 0,
                                        "latency_ms": {s: 0.0 for s in STAGES}, "model": model, "recent_ng": [],
                                        "sources": [{"source": i, "spec": sp, "frames": 0, "ng": 0, "verdict": None,
                                                     "normalised_score": None, "fps": 0.0, "dropped": 0,
                                                     "reconnects": 0, "stream": f"stream/{i}.mjpg"}
                                                    for i, sp in enumerate(self.sources)]}
        self._ng: collections.OrderedDict[int, bytes] = collections.OrderedDict()
        self._keep_ng, self._last_ng_t = keep_ng, 0.0
        self._seen = {(k, i): 0 for k in ("dropped", "reconnects") for i in range(len(self.sources))}
        self.viewers = 0
        self.encoded = 0
        # source → (frame, when, its verdict, JPEG): one encoding for every page at once
        self._jpg_cache: dict[int, tuple[int, float, dict[str, Any] | None, bytes]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: Any = None
        self.port = bind.port

    # --- loop side -------------------------------------------------------------------------------------------

    def publish(self, index: int, overlay: np.ndarray | None, ng: bool, normalised_score: float, threshold: float,
                fps: float, ms: dict[str, float], dropped: int, reconnects: int, source: int = 0,
                verdict: str | None = None) -> None:
        """The verdict of one frame (the loop's verdict sink calls it as soon as inference ends): counters and status,
        never blocking on viewers. ``overlay``, when given, is also handed on as in ``publish_picture``. ``verdict``:
        OK, NG or REVIEW (from ``ng`` when not given)."""
        verdict = verdict or ("NG" if ng else "OK")
        label = str(source)
        self._last_frame[source] = time.monotonic()
        self.m_frames.labels(label).inc()
        for stage, v in ms.items():
            if stage in STAGES:
                self.m_latency.labels(stage).observe(v / 1e3)
        self.m_fps.labels(label).set(fps)
        for key, metric, value in (("dropped", self.m_dropped, dropped), ("reconnects", self.m_reconnects, reconnects)):
            if value > self._seen[(key, source)]:
                metric.labels(label).inc(value - self._seen[(key, source)])
                self._seen[(key, source)] = value
        if ng:
            self.m_ng.labels(label).inc()
        with self._lock:
            # consecutive NG frames of a source are one part (one event): a thumbnail per part, not per frame
            event = (self._event.get(source) or index) if ng else None
            self._event[source] = event
            if event is not None:
                self._frame_event[(source, index)] = event
                while len(self._frame_event) > 1024:
                    self._frame_event.popitem(last=False)
            st = self._status
            one = st["sources"][source]
            one.update(verdict=verdict, normalised_score=float(normalised_score), fps=float(fps),
                       frames=one["frames"] + 1, ng=one["ng"] + int(ng), dropped=dropped, reconnects=reconnects)
            st.update(verdict=verdict, review=st.get("review", 0) + int(verdict == "REVIEW"),
                      normalised_score=float(normalised_score), threshold=float(threshold),
                      fps=float(fps), frames=st["frames"] + 1, ng=st["ng"] + int(ng),
                      dropped=sum(x["dropped"] for x in st["sources"]),
                      reconnects=sum(x["reconnects"] for x in st["sources"]))
            st["latency_ms"].update({s: float(v) for s, v in ms.items() if s in STAGES})
        if overlay is not None:
            self.publish_picture(source, index, overlay, ng, normalised_score)

    def publish_picture(self, source: int, index: int, overlay: np.ndarray, ng: bool, normalised_score: float,
                        latency_ms: float | None = None, meta: dict[str, Any] | None = None) -> None:
        """The drawn overlay of a frame (a reference swap for the viewers) with its own verdict (``meta``: so a page
        never shows one frame's verdict over another frame's picture); an NG part's thumbnail (its worst frame)."""
        if latency_ms is not None:
            self.m_latency.labels("picture").observe(latency_ms / 1e3)
        with self._lock:
            self._latest[source] = (index, overlay)
            self._latest_meta[source] = {"source": source, "frame": index, "verdict": "NG" if ng else "OK",
                                         "normalised_score": float(normalised_score)} | (meta or {})
            if latency_ms is not None:
                self._status["latency_ms"]["picture"] = float(latency_ms)
            key = source * 10**9 + self._frame_event.get((source, index), index) if ng else None
            old = {n["id"]: n for n in self._status["recent_ng"]}
            keep = key is not None and (key not in old or normalised_score > old[key]["normalised_score"])
        if keep and key is not None:  # one per part: a worse frame of the same part replaces its thumbnail
            h, w = overlay.shape[:2]
            thumb = cv2.resize(overlay, (max(1, round(w * 180 / h)), 180), interpolation=cv2.INTER_AREA)
            jpg = cv2.imencode(".jpg", thumb, [cv2.IMWRITE_JPEG_QUALITY, 80])[1].tobytes()
            with self._lock:
                self._ng[key] = jpg
                self._ng.move_to_end(key)
                while len(self._ng) > self._keep_ng:
                    self._ng.popitem(last=False)
                old = {n["id"]: n for n in self._status["recent_ng"]}
                entry = {"id": key, "source": source, "frame": index, "url": f"ng/{key}.jpg",
                         "normalised_score": float(normalised_score)} | (meta or {})
                self._status["recent_ng"] = [entry if k == key else old[k] for k in reversed(self._ng)
                                             if k in old or k == key]

    def latest_meta(self, source: int) -> dict[str, Any] | None:
        """The verdict of the source's newest picture."""
        with self._lock:
            meta = self._latest_meta.get(source)
        return dict(meta) if meta is not None else None

    PICTURE_TTL_S = 0.2  # pages share one encoded picture this long (a page shows a few pictures a second at most)

    def latest_picture(self, source: int) -> tuple[dict[str, Any] | None, bytes | None]:
        """The newest picture of a source as JPEG and the verdict of that same frame (the live page's pair). One
        encoding serves every page polling within ``PICTURE_TTL_S``: pages cost the loop the same whether one or
        ten are open."""
        self._page_seen = now = time.monotonic()
        with self._lock:
            got, meta = self._latest.get(source), self._latest_meta.get(source)
            cached = self._jpg_cache.get(source)
        if got is None:
            return None, None
        if cached is not None and (cached[0] == got[0] or now - cached[1] < self.PICTURE_TTL_S):
            return cached[2], cached[3]
        jpg = cv2.imencode(".jpg", got[1], [cv2.IMWRITE_JPEG_QUALITY, 80])[1].tobytes()
        with self._lock:
            self._jpg_cache[source] = (got[0], now, meta, jpg)
        return meta, jpg

    def cached_picture(self, source: int) -> tuple[dict[str, Any] | None, bytes | None] | None:
        """The shared picture when it is still good (no thread hop needed), else None."""
        with self._lock:
            got, cached = self._latest.get(source), self._jpg_cache.get(source)
        if got is None or cached is None:
            return None
        if cached[0] == got[0] or time.monotonic() - cached[1] < self.PICTURE_TTL_S:
            self._page_seen = time.monotonic()
            return cached[2], cached[3]
        return None

    async def latest_picture_async(self, source: int) -> tuple[dict[str, Any] | None, bytes | None]:
        """``latest_picture`` off the event loop (the encoding never holds the server's thread)."""
        shared = self.cached_picture(source)
        if shared is not None:
            return shared
        return await asyncio.get_running_loop().run_in_executor(None, self.latest_picture, source)

    def signed_ng(self, recent: list[dict[str, Any]], role: str) -> list[dict[str, Any]]:
        """The recent NG thumbnails with short-lived signed URLs (an <img> cannot send a header)."""
        return [n | {"url": self.guard.signer.sign("/" + n["url"], role).lstrip("/")} for n in recent]

    def sinks(self, stats: list[dict[str, Any]], error: str | None) -> None:
        """The loop's per-sink counts (called about once a second) and its error state."""
        for st in stats:
            for outcome in ("taken", "dropped", "failed"):
                self.m_sink.labels(st["sink"], outcome).set(st[outcome])
        self.m_error.set(1 if error else 0)
        with self._lock:
            self._status["sinks"] = stats
            self._status["error"] = error

    def gauge(self, name: str, doc: str, value: float) -> None:
        """A line output's own figure (outbox depth, record rows…) as a Prometheus gauge ``edge_stpm_<name>``."""
        with self._lock:
            if name not in self.m_extra:
                self.m_extra[name] = Gauge(f"edge_stpm_{name}", doc, registry=self.registry)
        self.m_extra[name].set(value)

    def status(self) -> dict[str, Any]:
        with self._lock:
            return json.loads(json.dumps(self._status))

    STALE_S = 5.0  # a free-running source that delivered nothing for this long is not healthy
    START_GRACE_S = 30.0  # ... counted from the start only after this long (cameras take a while to open)

    def started(self) -> None:
        """The run's sources are open and its PLC servers listen: /healthz may say 200 from now on (the HTTP server
        starts first, so that the web app answers while cameras open; a PLC or a monitor polling /healthz must not
        take that moment for a station ready to trigger)."""
        self.starting = False

    def health(self) -> tuple[bool, list[str]]:
        """(healthy, what is wrong): the run has started (``started``), every source delivers (free-run: a frame
        within ``STALE_S``), no required sink is failing, the model is loaded (the loop publishes only with a model;
        with a station, its active recipe)."""
        now = time.monotonic()
        problems = []
        if self.starting:
            problems.append("starting: the sources and the PLC servers are not up yet")
        with self._lock:
            error = self._status.get("error")
        if error:
            problems.append(f"output failing: {error}")
        if not self.triggered:
            for i, spec in enumerate(self.sources):
                last = self._last_frame.get(i)
                if (last is None and now - self.t_start > self.START_GRACE_S) or (
                        last is not None and now - last > self.STALE_S):
                    problems.append(f"source {i} ({spec}) delivers no frames")
        if self.control is not None and not self.control.recipes.active.has_model:
            problems.append(f"recipe {self.control.recipes.active.cfg.name} has no model yet: collect good parts "
                            "and fit one on the Recipes page")
        return not problems, problems

    # --- server side ------------------------------------------------------------------------------------------

    def start(self) -> "LiveView":
        """Bind and serve on a background thread; a bad bind (port in use…) or TLS pair is one UserError here."""
        self._ssl = ssl_context(self.server)
        ready: dict[str, Any] = {}
        started = threading.Event()

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._start_site())
            except OSError as exc:
                ready["error"] = exc
                started.set()
                loop.close()
                return
            started.set()
            loop.run_forever()
            loop.run_until_complete(self._shutdown())
            loop.close()

        self._thread = threading.Thread(target=serve, name="edge-stpm-http", daemon=True)
        self._thread.start()
        started.wait(30)
        if "error" in ready:
            exc = ready["error"]
            raise UserError(f"--http {self.bind.host}:{self.bind.port}: cannot listen ({exc.strerror or exc})")
        return self

    async def _start_site(self) -> None:
        audit = self.control.audit.write if self.control is not None else None
        if self.control is not None and self.control.engineer_token:  # the station's engineer token, as before
            self.sessions.tokens.setdefault("engineer", self.control.engineer_token)
        self.guard = Guard(self.sessions, self.server, self.bind.loopback, audit)
        app = build_app(route_table(self, self.control), self.guard)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.bind.host, self.bind.port, ssl_context=self._ssl)
        await site.start()
        self.port = self._runner.addresses[0][1]
        self._frame_cond = asyncio.Condition()
        self._jpeg: dict[int, tuple[int, bytes]] = {}
        self._watching: dict[int, int] = collections.defaultdict(int)
        self._encoder = asyncio.ensure_future(self._encode_loop())

    async def _shutdown(self) -> None:
        """The server's end, on its own loop: the encoder stopped, the site closed, then every task still pending
        (a stream, a request cut off by the shutdown timeout) cancelled and awaited — none left for the loop's close
        to destroy."""
        self._encoder.cancel()
        await self._runner.cleanup()
        rest = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in rest:
            t.cancel()
        await asyncio.gather(*rest, return_exceptions=True)

    @property
    def url(self) -> str:
        scheme = "https" if self.server.tls else "http"
        host = f"[{self.bind.host}]" if ":" in self.bind.host else self.bind.host
        return f"{scheme}://{host}:{self.port}/"

    async def page(self, request: Any) -> Any:
        """The run's own live page: a shell (no data, no token); its script logs in and fetches the figures."""
        return web.Response(text=PAGE, content_type="text/html")

    async def history_json(self, request: Any) -> Any:
        """The newest results from the inspection record (``?limit=N``, at most 1000; ``&verdict=NG``)."""
        if self.history is None:
            raise web.HTTPNotFound(text="this run keeps no inspection record (--no-history)")
        try:
            limit = max(1, min(1000, int(request.query.get("limit", "50"))))
        except ValueError:
            raise web.HTTPBadRequest(text="limit must be a number") from None
        verdict = request.query.get("verdict")
        if verdict not in (None, *VERDICTS):
            raise web.HTTPBadRequest(text="verdict must be one of " + ", ".join(VERDICTS))
        try:
            rows = await asyncio.get_running_loop().run_in_executor(None, query, self.history, None, verdict, None,
                                                                    limit)
        except UserError as exc:
            raise web.HTTPServiceUnavailable(text=str(exc)) from None
        return web.json_response(rows)

    async def healthz(self, request: Any) -> Any:
        """200 while sources deliver, every required output works and the model is loaded; else 503 with why
        (systemd's watchdog and a plant's monitoring poll it)."""
        ok, problems = self.health()
        return web.json_response({"ok": ok, "problems": [redact(x) for x in problems]}, status=200 if ok else 503)

    async def recipe(self, request: Any) -> Any:
        """The station's recipes (GET) or a change of the active one (POST ``?index=N`` or ``?name=NAME``, engineer
        only, audited as the person): 200 with the recipes; 404 for an unknown recipe (refused before it reaches the
        PLC handshake: the active one stays and no error 6 is set from HTTP — only the PLC's own register sets it)."""
        if self.recipes is None and self.control is not None:
            self.recipes = self.control.recipes
        if self.recipes is None:
            raise web.HTTPNotFound(text="this run has no recipes (run --config station.toml)")
        if request.method == "POST":
            q = request.query
            if "name" in q:
                rec = self.recipes.by_name(q["name"])
                index = rec.cfg.index if rec is not None else None
            else:
                try:
                    index = int(q.get("index", ""))
                except ValueError:
                    raise web.HTTPBadRequest(text="give ?index=N or ?name=NAME") from None
            known = index is not None and any(r.cfg.index == index for r in self.recipes.recipes.values())
            before = self.recipes.active.cfg.name
            ok = known and (self.recipe_plc.write_recipe(index) if self.recipe_plc is not None
                            else self.recipes.select(index))
            if self.control is not None:
                self.control.audit.write(request.get(WHO, "?"), "select recipe", self.recipes.active.cfg.name,
                                         {"name": before}, {"index": index}, "ok" if ok else "refused",
                                         "" if ok else "unknown recipe")
            if not ok:
                return web.json_response({"error": f"unknown recipe {q.get('name', q.get('index'))}",
                                          "recipes": self.recipes.summary()}, status=404)
        return web.json_response({"recipes": self.recipes.summary()})

    async def trigger(self, request: Any) -> Any:
        """``run --trigger http``: one frame for this request, answered with its result (then acknowledged, so the
        next POST can trigger). 409 while the box is busy with another trigger; 504 if no result within
        ``?timeout=`` seconds (default 10, at most 60); 503 when the inspection or the source failed."""
        st = self.plc
        if st is None:
            raise web.HTTPNotFound(text="this run does not take HTTP triggers (run --trigger http)")
        try:
            timeout = max(0.1, min(60.0, float(request.query.get("timeout", "10"))))
        except ValueError:
            raise web.HTTPBadRequest(text="timeout must be a number of seconds") from None

        tid = st.trigger()
        if tid is None:
            return web.json_response({"error": ERROR_TEXT.get(st.error_code, "busy"), "error_code": st.error_code},
                                     status=409)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            res = st.result_of(tid)
            if res is not None:
                st.ack()
                return web.json_response(res)
            if st.trigger_ready and st.error_code:  # the cycle ended without a result
                return web.json_response({"trigger_id": tid, "error": st.failing or ERROR_TEXT.get(st.error_code),
                                          "error_code": st.error_code}, status=503)
            await asyncio.sleep(0.001)
        return web.json_response({"trigger_id": tid, "error": f"no result within {timeout:g} s"}, status=504)

    async def status_json(self, request: Any) -> Any:
        """The run's figures; picture URLs signed for the caller's role (short-lived: an <img> sends no header)."""
        st, role = self.status(), request.get(ROLE) or "viewer"
        st["recent_ng"] = self.signed_ng(st["recent_ng"], role)
        for one in st["sources"]:
            one["stream"] = self.guard.signer.sign("/" + one["stream"], role).lstrip("/")
        return web.json_response(st | {"viewers": self.viewers})

    async def metrics(self, request: Any) -> Any:
        return web.Response(body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def ng_jpg(self, request: Any) -> Any:
        with self._lock:
            jpg = self._ng.get(small_int(request.match_info["index"]))
        if jpg is None:
            raise web.HTTPNotFound(text="no such NG snapshot (only the most recent are kept)")
        return web.Response(body=jpg, content_type="image/jpeg")

    async def _encode_loop(self) -> None:
        """While someone watches: encode the newest frame (if new) at most stream_fps times a second."""
        last: dict[int, int] = {}
        while True:
            await asyncio.sleep(1.0 / self.stream_fps)
            if self.viewers == 0:
                continue
            with self._lock:
                latest = {s: f for s, f in self._latest.items() if self._watching.get(s)}
            fresh = {s: f for s, f in latest.items() if last.get(s) != f[0]}
            if not fresh:
                continue
            encoded = {}
            for s, (idx, img) in fresh.items():
                last[s] = idx
                encoded[s] = (idx, cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 75])[1].tobytes())
                self.encoded += 1
            async with self._frame_cond:
                self._jpeg.update(encoded)
                self._frame_cond.notify_all()

    async def stream(self, request: Any) -> Any:
        """Multipart MJPEG of one source, at most ``server.max_viewers`` at once (503 beyond)."""
        if self.viewers >= self.server.max_viewers:
            raise web.HTTPServiceUnavailable(text=f"{self.viewers} viewers already watch: the limit is "
                                                  f"{self.server.max_viewers}")
        resp = web.StreamResponse(headers={"Content-Type": "multipart/x-mixed-replace; boundary=frame",
                                           "Cache-Control": "no-cache, private", "Pragma": "no-cache"})
        sock = request.transport.get_extra_info("socket") if request.transport else None
        if sock is not None:  # a small kernel send buffer: a viewer that stops reading is noticed within seconds
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
        src = small_int(request.match_info.get("source", "0"))
        if not 0 <= src < len(self.sources):
            raise web.HTTPNotFound(text=f"no source {request.match_info.get('source')}")
        await resp.prepare(request)
        self.viewers += 1
        self._watching[src] += 1
        self.m_viewers.set(self.viewers)
        sent, until = -1, request.get(SIGNED_UNTIL, float("inf"))  # set by the guard for a signed URL
        try:
            while True:
                async with self._frame_cond:
                    await self._frame_cond.wait_for(
                        lambda: src in self._jpeg and self._jpeg[src][0] != sent)  # noqa: B023 — awaited here
                    sent, jpg = self._jpeg[src]
                if time.time() >= until:  # a stream a signed URL opened ends with its signature (at the next frame)
                    break
                part = (b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: " + str(len(jpg)).encode()
                        + b"\r\n\r\n" + jpg + b"\r\n")
                await asyncio.wait_for(resp.write(part), timeout=self.send_timeout_s)
        except (asyncio.TimeoutError, ConnectionError, RuntimeError, asyncio.CancelledError, OSError):
            if request.transport is not None:  # a slow or vanished viewer is dropped; the others and the loop go on
                request.transport.abort()
        finally:
            self.viewers -= 1
            self._watching[src] -= 1
            self.m_viewers.set(self.viewers)
        with contextlib.suppress(Exception):
            await resp.write_eof()
        return resp

    def close(self) -> None:
        if self._loop is not None and self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=10)
