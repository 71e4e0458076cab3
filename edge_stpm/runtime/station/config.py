"""The station file (TOML): one typed model per section (pydantic, ``extra="forbid"`` so a misspelled key is an
error), checked before anything opens; every error is one line naming its key path
(``recipes[1].model: no bundle at …``). Ranges come from ``contract.options`` (one place, shared with the flags).

Each run key of a section maps to one field of the typed run configuration (``RUN_KEYS`` → ``station.app.RunConfig``;
``run``'s flags set the same fields, under the same names); a flag given on the command line overrides the same key
of the file. Relative paths are relative to the station file's folder.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import json
import re
import sys
from pathlib import Path
from typing import Any, Literal, Mapping, Optional, TypedDict

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from edge_stpm.common.errors import UserError, UserErrors
from edge_stpm.common.files import data_dir
from edge_stpm.contract.options import (
    BACKEND_NAMES,
    FRAME_PATH_NAMES,
    PRECISION_NAMES,
    RANGES,
    TRIGGER_NAMES,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10
    import tomli as tomllib

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
RECIPE_INDEX_MAX = 65535  # a Modbus holding register
MAX_RECIPES = 256  # recipes on one station: the station file's and those created on the box together


class _Range(TypedDict):
    ge: float
    le: float


def _r(name: str) -> _Range:
    lo, hi = RANGES[name]
    return {"ge": lo, "le": hi}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Recipe(_Section):
    """One part type: its model, thresholds, where to look and where never to look."""

    name: str = Field(description="Unique name (letters, digits, '_', '-', '.'), shown to the operator and stored "
                                  "with every result.")
    index: int = Field(ge=0, le=RECIPE_INDEX_MAX, description="The number the PLC writes to select it (Modbus register "
                                                              "11, OPC UA, HTTP).")
    model: Optional[str] = Field(None, min_length=1, description="The bundle folder (or .onnx graph / engine) of this "
                                 "recipe, or a model on a Triton server: grpc://HOST:PORT/MODEL. Left out: the recipe "
                                 "has no model yet and learns its first one on the box (Recipes page: collect, fit, "
                                 "deploy; kept in the model store, found at the next start); until then it judges "
                                 "nothing: PLC error 7, no Trigger Ready, /healthz 503.")
    threshold: float = Field(1.0, **_r("threshold"), description="Threshold on the score scale (0 = a typical good "
                                                                 "part, 1.0 = the model's stored threshold; 1.2 = 20 % "
                                                                 "of that distance beyond it), image and pixel. In a "
                                                                 "version 1 file: × the stored thresholds (converted).")
    # a Literal of a tuple (contract.options' one list of choices): valid at runtime, not a static type to mypy
    precision: Optional[Literal[PRECISION_NAMES]] = Field(  # type: ignore[valid-type]
        None, description="Which graph of the bundle to run.")
    roi: Optional[tuple[int, int, int, int]] = Field(None, description="x, y, w, h in frame pixels: only this part "
                                                                       "of the frame is inspected.")
    ignore_mask: Optional[Path] = Field(None, description="An image the size of the frame (or of the ROI): white "
                                                          "pixels are never inspected.")
    ignore_polygons: list[list[tuple[float, float]]] = Field(
        default_factory=list, description="Polygons in frame pixels ([[x, y], …], at least 3 points) that are never "
                                          "inspected.")
    min_defect_area: int = Field(0, ge=0, le=100_000_000, description="A part is NG only if one connected region "
                                                                      "above the pixel threshold covers at least this "
                                                                      "many frame pixels (0: the image score alone).")
    review_band: Optional[float] = Field(None, gt=0.0, lt=1.0, description="The lower edge of a review band, on "
                                         "the score scale (0 = a typical good part, 1.0 = this recipe's threshold; 0.5 "
                                         "= halfway): a part that is not NG but "
                                         "scores at least this much is REVIEW — Modbus status bit 6, OPC UA IsReview, "
                                         "never counted as OK. Off when not set.")

    # a version 1 station file: ``threshold`` multiplies the stored raw thresholds (the old scale's meaning); set by
    # Station, read through ``threshold_multiple``
    _threshold_multiple: bool = PrivateAttr(False)

    @property
    def threshold_multiple(self) -> bool:
        """Whether ``threshold`` is × the stored raw thresholds (a version 1 file) rather than on the score scale."""
        return self._threshold_multiple

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME.match(v):
            raise ValueError("use 1–64 letters, digits, '_', '-' or '.', starting with a letter or digit")
        return v

    @field_validator("roi")
    @classmethod
    def _roi(cls, v: Optional[tuple[int, int, int, int]]) -> Optional[tuple[int, int, int, int]]:
        if v is not None and (v[0] < 0 or v[1] < 0 or v[2] < 1 or v[3] < 1):
            raise ValueError("x, y must be ≥ 0 and w, h ≥ 1")
        return v

    @field_validator("ignore_polygons")
    @classmethod
    def _polygons(cls, v: list[list[tuple[float, float]]]) -> list[list[tuple[float, float]]]:
        if any(len(p) < 3 for p in v):
            raise ValueError("every polygon needs at least 3 points")
        return v


class Source(_Section):
    """One camera or stream: exactly one of ``spec`` and ``camera``."""

    spec: Optional[str] = Field(None, description="Video file, image folder, RTSP/HTTP URL, GStreamer pipeline or "
                                                  "basler://… (as run --source).")
    camera: Optional[int] = Field(None, **_r("camera"), description="Camera index (as run --camera).")

    @model_validator(mode="after")
    def _one(self) -> "Source":
        if (self.spec is None) == (self.camera is None):
            raise ValueError("give exactly one of spec and camera")
        return self


class RunSection(_Section):
    # Literal of a tuple: see Recipe.precision
    backend: Optional[Literal[BACKEND_NAMES]] = None  # type: ignore[valid-type]
    threads: Optional[int] = Field(None, **_r("threads"))
    workers: Optional[int] = Field(None, **_r("workers"))
    trigger: Optional[Literal[TRIGGER_NAMES]] = None  # type: ignore[valid-type]
    headless: Optional[bool] = None
    max_frames: Optional[int] = Field(None, **_r("max_frames"))
    reconnect: Optional[float] = Field(None, **_r("reconnect"))
    loop: Optional[bool] = None
    frame_path: Optional[Literal[FRAME_PATH_NAMES]] = None  # type: ignore[valid-type]
    alpha: Optional[float] = Field(None, **_r("alpha"))
    summary_json: Optional[Path] = None


class OutputsSection(_Section):
    record: Optional[Path] = Field(None, description="Record the overlay video here (run --record; the inspection "
                                                     "record is [history]).")
    record_segment: Optional[float] = Field(None, **_r("record_segment"))
    save_anomalies: Optional[Path] = None
    anomaly_interval: Optional[float] = Field(None, **_r("anomaly_interval"))
    events: Optional[Path] = None


class HistorySection(_Section):
    db: Optional[Path] = Field(None, description="The inspection record (run --history-db, history --history-db).")
    enabled: Optional[bool] = None
    keep_days: Optional[float] = Field(None, **_r("record_keep_days"))
    max_mb: Optional[float] = Field(None, **_r("record_max_mb"))


class MqttSection(_Section):
    url: Optional[str] = None
    topic: Optional[str] = None
    ca: Optional[Path] = None
    outbox: Optional[Path] = None
    outbox_max: Optional[int] = Field(None, **_r("outbox_max"))


class BindSection(_Section):
    bind: Optional[str] = Field(None, description="HOST:PORT to listen on.")


class OpcuaSection(BindSection):
    user: Optional[str] = Field(None, description="USER:PASSWORD of the one user who may call Trigger / AckResult / "
                                                 "SelectRecipe (anonymous sessions: loopback only, read-only).")
    security: Optional[Literal["none", "sign_encrypt"]] = Field(None, description="sign_encrypt: Basic256Sha256 Sign & "
                                                                "Encrypt only (needs cert and key, or self_signed); "
                                                                "none: nothing encrypted. Default: sign_encrypt when "
                                                                "a certificate is given, else none.")
    cert: Optional[Path] = Field(None, description="The server's certificate (PEM or DER); give it to the PLC.")
    key: Optional[Path] = Field(None, description="The certificate's RSA private key (PEM or DER, no password).")
    self_signed: Optional[bool] = Field(None, description="Make a self-signed certificate and key on first start (in "
                                                          "the data folder's opcua/, or at cert/key), reused after.")


class HttpSection(BindSection):
    token: Optional[str] = Field(None, description="The viewer's token (sent as Authorization: Bearer, or typed once "
                                                  "at the login page; never in a URL); needed for a non-loopback "
                                                  "bind.")
    fps: Optional[float] = Field(None, **_r("http_fps"))
    engineer_token: Optional[str] = Field(None, min_length=12, description="Token of the engineer role: thresholds, "
                                          "recipes, deploy, rollback (without it those are refused, 403).")
    operator_token: Optional[str] = Field(None, min_length=12, description="Token of the operator role: reviews.")
    viewer_token: Optional[str] = Field(None, min_length=12, description="Token of the viewer role (default: token).")
    idle_lock_minutes: float = Field(15.0, ge=1, le=1440, description="A web session unused this long is locked.")
    tls_cert: Optional[Path] = Field(None, description="The server's TLS certificate (PEM); with tls_key: HTTPS.")
    tls_key: Optional[Path] = Field(None, description="The TLS certificate's private key (PEM).")
    tls_self_signed: bool = Field(False, description="Serve HTTPS with a self-signed certificate made on first start "
                                                     "(kept in the data folder's tls/).")
    insecure: bool = Field(False, description="Allow a non-loopback bind without TLS (tokens and sessions then cross "
                                              "the network readable); without it such a bind refuses to start.")
    trusted_proxies: list[str] = Field(default_factory=list, max_length=16, description="Addresses of reverse "
                                       "proxies whose X-Forwarded-For is believed (the client's address for audit "
                                       "and lockout); any other peer's header is ignored.")
    never_lock: list[str] = Field(default_factory=list, max_length=64, description="Addresses never locked out after "
                                  "bad credentials (the PLC's, the MES's); loopback never is.")
    max_upload_mb: float = Field(2048.0, ge=1, le=65536, description="The largest bundle upload (deploy), streamed to "
                                                                      "disk.")
    max_viewers: int = Field(16, ge=1, le=1024, description="Open MJPEG streams at once (503 beyond).")

    @model_validator(mode="after")
    def _tls_pair(self) -> "HttpSection":
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together")
        for addr in (*self.trusted_proxies, *self.never_lock):
            try:
                ipaddress.ip_address(addr)
            except ValueError:
                raise ValueError(f"{addr!r} is not an IP address") from None
        return self


class AuditSection(_Section):
    syslog: Optional[str] = Field(None, description="Also send every audit row to this syslog receiver, HOST:PORT "
                                                    "(UDP, RFC 5424).")


class EvidenceSection(_Section):
    enabled: bool = Field(True, description="Save the full frame and heatmap of every NG result (and a sample of OK "
                                            "ones) for review and training; needs the record ([history]).")
    folder: Optional[Path] = Field(None, description="Where (default: the data folder's evidence/).")
    budget_mb: float = Field(2048.0, ge=1, le=10_000_000, description="Disk budget; the oldest evidence goes first.")
    ng_days: float = Field(90.0, ge=0.01, le=36500, description="NG (and REVIEW) frames are kept this long.")
    ok_days: float = Field(7.0, ge=0.01, le=36500, description="Sampled OK frames are kept this long.")
    ok_every: int = Field(100, ge=0, le=1_000_000, description="Keep one OK frame in this many (0: none).")
    min_free_mb: float = Field(512.0, ge=0, le=10_000_000, description="Keep at least this much disk free.")


class DriftSection(_Section):
    enabled: bool = Field(True, description="Track the parts' scores per recipe against the model's calibration (the "
                                            "median of all parts, the p95 of those not judged NG) and raise an alarm "
                                            "when they move (docs/feedback.md).")
    window: int = Field(100, ge=10, le=100_000, description="The last this many parts, per recipe.")
    min_parts: int = Field(50, ge=10, le=100_000, description="No figure and no alarm before this many parts.")
    margin: float = Field(0.5, gt=0, le=100, description="Alarm when the window's median moves, or its p95 rises, by "
                                                        "more than this many calibrated spreads (the good images' "
                                                        "p95 − p50).")


class StoreSection(_Section):
    root: Optional[Path] = Field(None, description="Where the box keeps every bundle deployed to its recipes "
                                                   "(default: the data folder's models/).")
    drop: Optional[Path] = Field(None, description="A watched drop folder: a bundle (zip or folder) put into "
                                                   "DROP/<recipe>/ is deployed to that recipe, verified and "
                                                   "self-tested first; then moved to .done/ or .refused/ (with why).")

    def folder(self) -> Path:
        """The model store's folder: ``root``, else the data folder's models/."""
        return self.root or data_dir() / "models"


class Station(_Section):
    """An edge-stpm station: its recipes, its sources and every output of ``edge-stpm run``."""

    version: Literal[1, 2] = Field(1, description="The station file's format version. 2: recipes' thresholds on the "
                                                "score scale (0 = a typical good part, 1 = the stored threshold). 1 "
                                                "(also when absent, as every file written before 2026-12): a recipe's "
                                                "threshold multiplies the stored raw thresholds, as it always did (1.0 "
                                                "is the same in both). Review bands are on the score scale in both.")
    recipe: Optional[str] = Field(None, description="The recipe selected at start (its name; default the first).")
    recipes: list[Recipe] = Field(min_length=1, max_length=MAX_RECIPES)
    sources: list[Source] = Field(default_factory=list, max_length=64)
    run: RunSection = RunSection()
    outputs: OutputsSection = OutputsSection()
    history: HistorySection = HistorySection()
    mqtt: MqttSection = MqttSection()
    modbus: BindSection = BindSection()
    opcua: OpcuaSection = OpcuaSection()
    http: HttpSection = HttpSection()
    audit: AuditSection = AuditSection()
    store: StoreSection = StoreSection()
    evidence: EvidenceSection = EvidenceSection()
    drift: DriftSection = DriftSection()

    @model_validator(mode="after")
    def _unique(self) -> "Station":
        for key in ("name", "index"):
            seen: dict[Any, int] = {}
            for i, r in enumerate(self.recipes):
                v = getattr(r, key)
                if v in seen:
                    raise ValueError(f"recipes[{i}].{key}: {v!r} is also recipes[{seen[v]}].{key}")
                seen[v] = i
        if self.recipe is not None and self.recipe not in {r.name for r in self.recipes}:
            raise ValueError(f"recipe: no recipe named {self.recipe!r}")
        for r in self.recipes:
            r._threshold_multiple = self.version == 1
        return self

    def initial(self) -> Recipe:
        return next((r for r in self.recipes if r.name == self.recipe), self.recipes[0])


# station key → run option (parameter name of cli.run); recipes and sources are handled on their own
# station-file key → the RunConfig field it sets (runtime/station/app.py; a test checks every one is a field)
RUN_KEYS = {
    "run.backend": "backend", "run.threads": "threads", "run.workers": "workers", "run.trigger": "trigger",
    "run.headless": "headless", "run.max_frames": "max_frames", "run.reconnect": "reconnect", "run.loop": "loop",
    "run.frame_path": "frame_path", "run.alpha": "alpha", "run.summary_json": "summary_json",
    "outputs.record": "record", "outputs.record_segment": "record_segment",
    "outputs.save_anomalies": "save_anomalies", "outputs.anomaly_interval": "anomaly_interval",
    "outputs.events": "events",
    "history.db": "history_db", "history.keep_days": "history_keep_days", "history.max_mb": "history_max_mb",
    "mqtt.url": "mqtt", "mqtt.topic": "mqtt_topic", "mqtt.ca": "mqtt_ca", "mqtt.outbox": "mqtt_outbox",
    "mqtt.outbox_max": "outbox_max", "modbus.bind": "modbus", "opcua.bind": "opcua", "opcua.user": "opcua_user",
    "opcua.security": "opcua_security", "opcua.cert": "opcua_cert", "opcua.key": "opcua_key",
    "opcua.self_signed": "opcua_self_signed",
    "http.bind": "http", "http.token": "http_token", "http.fps": "http_fps", "http.tls_cert": "http_cert",
    "http.tls_key": "http_key", "http.tls_self_signed": "http_self_signed", "http.insecure": "http_insecure",
}
PATH_KEYS = {"http.tls_cert", "http.tls_key", "opcua.cert", "opcua.key",
             "run.summary_json", "outputs.record", "outputs.save_anomalies", "outputs.events", "history.db",
             "mqtt.ca", "mqtt.outbox", "store.root", "store.drop", "evidence.folder"}


def _where(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part not in ("function-after", "tagged-union"):
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _message(err: Mapping[str, object]) -> str:
    msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
    if err.get("type") == "extra_forbidden":
        return "unknown key (misspelled? `edge-stpm config schema` lists the keys)"
    if err.get("type") == "missing":
        return "required key is missing"
    return msg


def errors_of(exc: ValidationError) -> list[str]:
    """One line per error: ``key.path: what is wrong``."""
    out = []
    for e in exc.errors():
        msg = _message(e)
        where = _where(tuple(p for p in e.get("loc", ()) if not str(p).startswith("function")))
        if msg.startswith("recipes[") or msg.startswith("recipe:"):  # cross-recipe checks name their own path
            out.append(msg)
        else:
            out.append(f"{where}: {msg}")
    return out


def read_toml(path: Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no station file at {path}")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a text file (a station file is TOML)") from None
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{path}: not valid TOML: {exc}") from None


def remote(p: Path | str) -> bool:
    """A model on a Triton server (``grpc://HOST:PORT/MODEL``): not a path on this box."""
    return str(p).startswith(("grpc:/", "http:/"))


def _resolve(base: Path, p: Optional[Path | str]) -> Any:
    """``p`` relative to ``base`` (a str stays a str: a model may be a URL)."""
    if p is None or remote(p) or Path(p).is_absolute():
        return p
    return str(base / p) if isinstance(p, str) else base / p


def check_files(doc: Any, base: Path) -> list[str]:
    """What the schema cannot see: every recipe's model and ignore mask exist (paths relative to ``base``). Read
    from the document as given, so a file that also breaks the schema gets every line at once."""
    errs = []
    recipes = doc.get("recipes") if isinstance(doc, dict) else None
    for i, r in enumerate(recipes if isinstance(recipes, list) else []):
        if not isinstance(r, dict):
            continue
        model, mask = r.get("model"), r.get("ignore_mask")
        if isinstance(model, str) and model and not remote(model) and not Path(_resolve(base, model)).exists():
            errs.append(f"recipes[{i}].model: no bundle at {_resolve(base, model)}")
        if isinstance(mask, str) and mask and not Path(_resolve(base, mask)).is_file():
            errs.append(f"recipes[{i}].ignore_mask: no image at {_resolve(base, mask)}")
    return errs


def parse(doc: Any, base: Path, where: str = "station file") -> Station:
    """A station from a decoded document; every error is a line of one UserError (the first line names the
    count), paths resolved against ``base``."""
    try:
        st = Station.model_validate(doc)
    except ValidationError as exc:
        raise UserErrors(where, errors_of(exc) + check_files(doc, base)) from None
    errs = check_files(doc, base)
    if errs:
        raise UserErrors(where, errs)
    recipes = [r.model_copy(update={"model": _resolve(base, r.model), "ignore_mask": _resolve(base, r.ignore_mask)})
               for r in st.recipes]
    upd: dict[str, Any] = {"recipes": recipes}
    for key in PATH_KEYS:
        sec, name = key.split(".")
        section = upd.get(sec, getattr(st, sec))
        if getattr(section, name) is not None:
            upd[sec] = section.model_copy(update={name: _resolve(base, getattr(section, name))})
    return st.model_copy(update=upd)


def load(path: Path) -> Station:
    """Read and check a station file; one UserError listing every problem with its key path."""
    path = Path(path)
    return parse(read_toml(path), path.resolve().parent, str(path))


def run_values(st: Station) -> dict[str, Any]:
    """The run configuration's fields the station sets (only keys the file gives), by RunConfig field name."""
    out = {}
    for key, param in RUN_KEYS.items():
        sec, name = key.split(".")
        v = getattr(getattr(st, sec), name)
        if v is not None:
            out[param] = v
    if st.history.enabled is False:
        out["no_history"] = True
    return out


def collect_values(st: Station, cfg: Any) -> Any:
    """``edge-stpm collect --config``: the station's source, trigger, PLC servers, HTTP and its first recipe's ROI,
    where the command line gave none (``cfg``: runtime.learn.collect.CollectSettings)."""
    rv = run_values(st)
    specs = [str(x.camera) for x in st.sources if x.camera is not None] + [x.spec for x in st.sources if x.spec]
    upd: dict[str, Any] = {"specs": cfg.specs or specs, "roi": cfg.roi or st.initial().roi}
    if cfg.trigger == "free-run" and rv.get("trigger"):
        upd["trigger"] = rv["trigger"]
    for k in ("modbus", "opcua", "opcua_user", "http", "http_token"):
        upd[k] = getattr(cfg, k) or rv.get(k)
    return dataclasses.replace(cfg, **upd)


def schema() -> dict[str, Any]:
    """The station file's JSON Schema (for editors: completion and checks)."""
    s = Station.model_json_schema()
    s["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    s["title"] = "edge-stpm station file"
    return s


def schema_json() -> str:
    return json.dumps(schema(), indent=1) + "\n"


def _toml(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    return json.dumps(str(v))


def recipe_toml(r: Recipe, note: str = "") -> list[str]:
    """One recipe as a ``[[recipes]]`` table (a key not set shown commented out; ``note`` a comment on its header),
    and an empty line."""
    lines = ["[[recipes]]" + (f"  # {note}" if note else "")]
    for k, v in r.model_dump().items():
        lines.append(f"{k} = {_toml(v)}" if v is not None else f"# {k} = (not set)")
    return [*lines, ""]


def effective_toml(st: Station, run_defaults: dict[str, Any], more_recipes: list[str] | None = None) -> str:
    """Every key with the value a run uses: the file's, else ``run_defaults`` (the run's defaults by RunConfig field
    name); a key with neither is shown commented out. ``more_recipes``: lines after the file's recipes (those created
    on the box: created.show_toml)."""
    lines = [f"version = {st.version}", f"recipe = {_toml(st.initial().name)}", ""]
    for r in st.recipes:
        lines += recipe_toml(r)
    lines += more_recipes or []
    for src in st.sources:
        lines += ["[[sources]]"] + [f"{k} = {_toml(v)}" for k, v in src.model_dump().items() if v is not None] + [""]
    sections: dict[str, list[str]] = {}
    for key, param in RUN_KEYS.items():
        sec, name = key.split(".")
        v = getattr(getattr(st, sec), name)
        v = run_defaults.get(param) if v is None else v
        sections.setdefault(sec, []).append(f"{name} = {_toml(v)}" if v is not None else f"# {name} = (not set)")
    sections["history"].insert(1, f"enabled = {_toml(st.history.enabled is not False)}")
    for sec, body in sections.items():
        lines += [f"[{sec}]"] + body + [""]
    return "\n".join(lines)
