"""The run's one web server: one aiohttp application, one authentication layer, one route table.

Every route is a ``Route`` in the table ``route_table`` builds, and declares its role: ``public`` (no credentials:
``/healthz``, the page shells and their static files, login/logout), ``viewer``, ``operator`` or ``engineer``.
``guarded`` wraps each handler with the same checks, in this order, before any body is read:

1. the ``Host`` header (a loopback bind answers only to a loopback name: no DNS rebinding);
2. a state-changing request from another origin (``Origin`` ≠ ``Host``) is refused (nothing for CSRF to ride on);
3. the declared body size (``Content-Length`` over the route's limit → 413, before reading); the application's
   ``client_max_size`` is ``SMALL_BODY``, and the deploy routes stream their body to disk under their own cap;
4. a client locked out after repeated bad credentials → 429 (never the box itself: loopback, nor
   ``[http] never_lock`` addresses such as the PLC's);
5. credentials from headers only (``X-Session`` or ``Authorization: Bearer``; a ``token=``/``session=`` in a URL is
   ignored), or a short-lived signed URL where the route allows one (images, streams, downloads): 401 without,
   403 when the role is too low — both audited with who it was (bad credentials throttled per client: an IPv4
   address, an IPv6 /64; a 403 at most once a minute per caller and action).

Every response carries the security headers (CSP without inline script, ``frame-ancestors 'none'``, nosniff,
``Referrer-Policy: no-referrer``). TLS comes from ``[http] tls_cert``/``tls_key`` (or a self-signed pair made on
first start); a non-loopback bind without TLS refuses to start unless ``[http] insecure = true``."""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import hmac
import ipaddress
import os
import secrets
import socket
import ssl
import tempfile
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable

from aiohttp import web

from edge_stpm.common.errors import UserError
from edge_stpm.common.files import atomic_path
from edge_stpm.common.throttle import Throttle
from edge_stpm.runtime.web.api import Api
from edge_stpm.runtime.web.app import PAGES, page_shell
from edge_stpm.runtime.web.auth import RANK
from edge_stpm.runtime.web.bodies import RECIPE_BODY
from edge_stpm.runtime.web.keys import CLIENT, ROLE, SIGNED_UNTIL, WHO

PUBLIC = "public"
ROLE_NAMES = (PUBLIC, *RANK)
SMALL_BODY = 64 * 1024  # bytes: every route's body limit unless it declares another
LOGIN_BODY = 4 * 1024
SIGNED_TTL_S = 300.0  # how long a signed image/stream/download URL stays good
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' blob: data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}
LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1", "[::1]"}

Handler = Callable[[Any], Awaitable[Any]]


@dataclass(frozen=True)
class Route:
    """One HTTP route: what answers it and who may call it."""

    method: str  # GET, POST or DELETE
    path: str  # aiohttp's path syntax (``/api/live/{source:\\d+}.jpg``)
    handler: Handler
    role: str  # public | viewer | operator | engineer
    body: int = SMALL_BODY  # the largest body accepted, bytes (the handler streams a larger one itself)
    signed: bool = False  # a short-lived signed URL may stand in for credentials (GET of pictures/downloads)
    note: str = ""  # what the route is for (docs/api.md's table is checked against the table)
    action: str = ""  # the audit log's name for it (default "METHOD PATH")

    def __post_init__(self) -> None:
        if self.role not in ROLE_NAMES:
            raise ValueError(f"route {self.method} {self.path}: role {self.role!r} is not one of {ROLE_NAMES}")


@dataclass
class ServerSettings:
    """How the server listens and whom it trusts (the station file's ``[http]``; ``run --http-*`` flags)."""

    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_self_signed: bool = False  # make a self-signed pair in ``tls_dir`` on first start
    tls_dir: Path | None = None
    insecure: bool = False  # a non-loopback bind without TLS (said at start)
    trusted_proxies: tuple[str, ...] = ()  # X-Forwarded-For is believed only from these addresses
    never_lock: tuple[str, ...] = ()  # addresses never locked out (the PLC, the MES); loopback never is
    max_upload_mb: float = 2048.0  # a bundle upload's cap (streamed to disk)
    max_viewers: int = 16  # open MJPEG streams at once
    max_sessions: int = 256

    @property
    def tls(self) -> bool:
        return bool(self.tls_cert or self.tls_self_signed)


# --- credentials ------------------------------------------------------------------------------------------------


class Signer:
    """Short-lived signed URLs (``?exp=…&role=…&sig=…``): an ``<img>`` or a download link cannot send a header, and
    no session or token may travel in a URL. A signature is good for one path, one role and ``SIGNED_TTL_S``."""

    def __init__(self) -> None:
        self.key = secrets.token_bytes(32)

    def _mac(self, path: str, role: str, exp: int) -> str:
        return hmac.new(self.key, f"{path}\n{role}\n{exp}".encode(), hashlib.sha256).hexdigest()[:32]

    def sign(self, path: str, role: str, ttl_s: float = SIGNED_TTL_S) -> str:
        """``path`` (which may carry its own query) with a signature for ``role``."""
        base, _, query = path.partition("?")
        exp = int((time.time() // 60 + 1) * 60 + ttl_s)  # the same URL for a minute: pictures stay cached
        extra = urllib.parse.urlencode({"exp": exp, "role": role, "sig": self._mac(base, role, exp)})
        return f"{base}?{query + '&' if query else ''}{extra}"

    def role_of(self, path: str, query: Any) -> str | None:
        """The signed role, or None; ``expired`` tells an old page's honest link from a forgery (see ``check``)."""
        return self.check(path, query)[0]

    def check(self, path: str, query: Any) -> tuple[str | None, bool]:
        """(the signed role or None, whether the signature is forged: a wrong MAC, not merely expired — an old page
        left open must not lock its own user out)."""
        try:
            exp, role, sig = int(query.get("exp", "0")), str(query.get("role", "")), str(query.get("sig", ""))
        except ValueError:
            return None, True
        if role not in RANK or not hmac.compare_digest(sig, self._mac(path, role, exp)):
            return None, True
        return (role, False) if exp >= time.time() else (None, False)


@dataclass
class Guard:
    """The one authentication layer: who a request is, what it may do, and the audit of every refusal."""

    sessions: Any  # runtime/web/auth.Sessions
    settings: ServerSettings
    bind_loopback: bool
    audit: Callable[..., Any] | None = None  # Audit.write(who, action, recipe, before, after, outcome, detail)
    signer: Signer = field(default_factory=Signer)
    throttle: Throttle = field(init=False)
    _audited: dict[str, float] = field(default_factory=dict)  # refusals' audit rows: when each key last wrote one
    pending: list[tuple[Any, ...]] = field(default_factory=list)  # audit rows to write before the next answer

    def __post_init__(self) -> None:
        self.throttle = Throttle(self.settings.never_lock)

    def client(self, request: Any) -> str:
        """The caller's address: ``X-Forwarded-For``'s last hop only when the peer is a trusted proxy."""
        peer = request.remote or "?"
        fwd = request.headers.get("X-Forwarded-For")
        if fwd and peer in self.settings.trusted_proxies:
            return fwd.split(",")[-1].strip() or peer
        return peer

    def public_host(self, request: Any) -> str | None:
        """The host the browser asked for: ``X-Forwarded-Host`` from a trusted proxy, else ``Host``."""
        fwd = request.headers.get("X-Forwarded-Host")
        if fwd and (request.remote or "?") in self.settings.trusted_proxies:
            return fwd.split(",")[0].strip()
        return request.headers.get("Host")

    def host_ok(self, request: Any) -> bool:
        if not self.bind_loopback:
            return True
        host = request.headers.get("Host", "")
        name = host.rsplit(":", 1)[0] if not host.startswith("[") else host.split("]")[0] + "]"
        return name.lower() in LOOPBACK_NAMES

    def credentials(self, request: Any, route: Route) -> tuple[str | None, bool]:
        """(role, credentials were given but wrong)."""
        session = request.headers.get("X-Session") or None
        auth = request.headers.get("Authorization", "")
        bearer = auth[7:].strip() if auth[:7].lower() == "bearer " else None
        role = self.sessions.role_of_session(session) or self.sessions.role_of_token(bearer)
        if role is None and route.signed and "sig" in request.query:
            role, forged = self.signer.check(request.path, request.query)
            if role is None:
                return None, forged
            request[SIGNED_UNTIL] = int(request.query["exp"])  # checked: a stream it opened ends with it
        if role is None and (session or bearer):
            return None, True
        return role or self.open_role(request), False

    def open_role(self, request: Any) -> str | None:
        """The role of a request without credentials on an open loopback view — never for one that came through a
        reverse proxy (the proxy's clients are not the box)."""
        if "X-Forwarded-For" in request.headers or (request.remote or "?") in self.settings.trusted_proxies:
            return None
        return self.sessions.open_role

    def write_audit(self, who: str, action: str, detail: str) -> None:
        """A refusal's audit row, written off the event loop before the refusal is answered (``guarded`` awaits
        ``pending``): the log's order is the order of the answers."""
        if self.audit is not None:
            self.pending.append((who, action, None, None, None, "refused", detail))

    def anonymous(self, client: str, route: Route) -> None:
        """A request with no credentials at all: audited at most once a minute per address."""
        if self._due(f"401 {client}"):
            self.write_audit(
                f"anonymous@{client}", route.action or f"{route.method} {route.path}", "no credentials (401)"
            )

    def forbidden(self, who: str, route: Route) -> None:
        """A role too low for the route: audited at most once a minute per caller and action (a script that hammers
        an engineer's route with a viewer's token writes one row a minute, not one per request)."""
        action = route.action or f"{route.method} {route.path}"
        if self._due(f"403 {who} {action}"):
            self.write_audit(who, action, f"needs the {route.role} role")

    def _due(self, key: str) -> bool:
        """True at most once a minute per ``key`` (the table is bounded: cleared past 10 000 keys)."""
        now = time.monotonic()
        if now - self._audited.get(key, -1e9) < 60.0:
            return False
        if len(self._audited) > 10_000:
            self._audited.clear()
        self._audited[key] = now
        return True

    async def flush(self) -> None:
        """Write the refusals' audit rows (off the event loop: each commits with fsync)."""
        while self.pending and self.audit is not None:
            row = self.pending.pop(0)
            await asyncio.get_running_loop().run_in_executor(None, self.audit, *row)

    def refuse_bad(self, client: str, action: str) -> Any:
        """401 for wrong credentials (a bad token at login, an unknown session or token, a bad signature anywhere):
        counted against the client's address, audited within the throttle's bound."""
        audit, lock = self.throttle.fail(client)
        if lock:
            self.write_audit(
                f"anonymous@{client}",
                "lockout",
                f"{self.throttle.max_failures} bad credentials: locked out for {lock:.0f} s",
            )
        elif audit:
            self.write_audit(f"anonymous@{client}", action, "bad credentials (401)")
        return web.Response(status=401, text="unknown session or token: log in again (POST /api/login)")

    def check(self, request: Any, route: Route) -> Any | None:
        """None when the request may go on (``request['role']``/``['who']`` set), else the refusal to send."""
        client = self.client(request)
        if not self.host_ok(request):
            return web.Response(status=421, text="this station answers only to its loopback name on a loopback bind")
        origin = request.headers.get("Origin")
        if request.method != "GET" and origin and urllib.parse.urlsplit(origin).netloc != self.public_host(request):
            return web.Response(status=403, text="a request from another origin is refused")
        if request.content_length is not None and request.content_length > route.body:
            return web.Response(status=413, text=f"body over {route.body} bytes refused")
        left = self.throttle.locked_for(client)
        if left > 0 and not self.throttle.exempt(client):
            self.throttle.refused += 1
            return web.Response(
                status=429,
                text=f"too many bad credentials: try again in {left:.0f} s",
                headers={"Retry-After": str(int(left) + 1)},
            )
        role, bad = self.credentials(request, route) if route.role != PUBLIC else (None, False)
        if route.role != PUBLIC:
            if bad:
                return self.refuse_bad(client, route.action or f"{route.method} {route.path}")
            if role is None:
                self.anonymous(client, route)
                return web.Response(status=401, text="log in (POST /api/login) or send Authorization: Bearer TOKEN")
            if RANK[role] < RANK[route.role]:
                self.forbidden(f"{role}@{client}", route)
                return web.Response(status=403, text=f"{route.method} {route.path} needs the {route.role} role")
        request[ROLE], request[WHO], request[CLIENT] = role, f"{role or 'anonymous'}@{client}", client
        return None


def guarded(guard: Guard, route: Route) -> Handler:
    async def handler(request: Any) -> Any:
        refusal = guard.check(request, route)
        if refusal is not None:
            await guard.flush()
            return refusal
        return await route.handler(request)

    handler.__name__ = getattr(route.handler, "__name__", "handler")
    return handler


# --- TLS --------------------------------------------------------------------------------------------------------


def ssl_context(settings: ServerSettings) -> ssl.SSLContext | None:
    """The server's TLS context (TLS 1.2+), from the configured pair or a self-signed one made once."""
    if not settings.tls:
        return None
    cert, key = settings.tls_cert, settings.tls_key
    if (cert is None) != (key is None):
        raise UserError("--http-cert and --http-key go together (or [http] tls_cert and tls_key)")
    if cert is None or key is None:
        folder = settings.tls_dir or Path(".")
        cert, key = folder / "http-cert.pem", folder / "http-key.pem"
        if not (cert.is_file() and key.is_file()):
            make_self_signed(cert, key)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(str(cert), str(key))
    except (OSError, ssl.SSLError) as exc:
        raise UserError(f"[http] tls_cert {cert} / tls_key {key}: cannot load ({exc})") from None
    return ctx


def make_self_signed(cert: Path, key: Path, name: str = "edge-stpm") -> None:
    """A self-signed certificate (EC P-256, 10 years) for this box, written atomically; the key readable by its owner
    only. Needs ``cryptography`` (installed with the ``[line]`` extra, which OPC UA uses)."""
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
    except ImportError:
        raise UserError(
            "[http] tls_self_signed needs the cryptography package (pip install 'edge-stpm[line]'), "
            "or give tls_cert and tls_key"
        ) from None

    k = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    alt = x509.SubjectAlternativeName(
        [
            x509.DNSName("localhost"),
            x509.DNSName(socket.gethostname()),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        ]
    )
    c = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(k.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(alt, critical=False)
        .sign(k, hashes.SHA256())
    )
    cert.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_key = tempfile.mkstemp(prefix=".http-key.", dir=key.parent)  # 0600 from the start: never readable by others
    with os.fdopen(fd, "wb") as f:
        f.write(
            k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        )
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp_key, key)
    with atomic_path(cert) as tmp:
        tmp.write_bytes(c.public_bytes(serialization.Encoding.PEM))


def check_listen(host: str, loopback: bool, settings: ServerSettings) -> None:
    """A non-loopback bind without TLS is refused unless the station file says ``insecure = true``."""
    if not loopback and not settings.tls and not settings.insecure:
        raise UserError(
            f"HTTP bind {host} is not a loopback address and has no TLS: give [http] tls_cert and tls_key "
            "(or tls_self_signed = true; run --http-cert/--http-key/--http-self-signed), put a TLS proxy "
            "in front and bind to 127.0.0.1 (docs/api.md, TLS), or set [http] insecure = true "
            "(run --http-insecure) to serve tokens and sessions readable on the network"
        )


# --- the application --------------------------------------------------------------------------------------------


def build_app(routes: list[Route], guard: Guard) -> Any:
    """The aiohttp application: every route of the table behind the guard; security headers on every answer."""
    async def headers(request: Any, response: Any) -> None:
        for k, v in HEADERS.items():
            response.headers.setdefault(k, v)
        if request.path.startswith("/api/") or request.path.endswith(".json"):
            response.headers.setdefault("Cache-Control", "no-store")

    seen: set[tuple[str, str]] = set()
    app = web.Application(client_max_size=SMALL_BODY)
    for r in routes:
        if (r.method, r.path) in seen:
            raise ValueError(f"route {r.method} {r.path} twice in the table")
        seen.add((r.method, r.path))
        app.router.add_route(r.method, r.path, guarded(guard, r))
    app.on_response_prepare.append(headers)
    return app


# --- the route table --------------------------------------------------------------------------------------------

STATIC = Path(__file__).resolve().parent / "static"
STATIC_TYPES = {".js": "text/javascript", ".css": "text/css", ".html": "text/html"}


async def static_file(request: Any) -> Any:
    """A file shipped in the package's static/ folder (by its bare name: no path, nothing else on disk)."""
    name = request.match_info["name"]
    path = STATIC / name
    if "/" in name or name.startswith(".") or path.suffix not in STATIC_TYPES or not path.is_file():
        raise web.HTTPNotFound(text="no such file")
    return web.Response(
        body=path.read_bytes(), content_type=STATIC_TYPES[path.suffix], headers={"Cache-Control": "max-age=300"}
    )


def route_table(view: Any, control: Any = None) -> list[Route]:
    """Every route of the run's server with its role: the live view's, the station's (with a station file) and the
    web app's (with a station file's sessions). The route × role test walks exactly this list."""
    api = Api(view, control, view.sessions)
    if control is None:
        return _live_routes(view, api)
    return _live_routes(view, api) + _station_routes(view, api) + _app_routes(view, api)


def _live_routes(v: Any, api: Any) -> list[Route]:
    """The run's own routes: health, its page, login, figures, streams, triggers, recipes."""
    return [
        Route("GET", "/healthz", v.healthz, PUBLIC, note="200 or 503 with what is wrong (secrets redacted)"),
        Route("GET", "/", v.page, PUBLIC, note="the run's live page (a shell: its data needs a login)"),
        Route("GET", "/static/{name}", static_file, PUBLIC, note="the pages' scripts and styles"),
        Route("POST", "/api/login", api.login, PUBLIC, body=LOGIN_BODY, note="token → session"),
        Route("POST", "/api/logout", api.logout, PUBLIC, note="ends the X-Session session on the server"),
        Route("GET", "/api/me", api.me, "viewer", note="the session's role"),
        Route("GET", "/status.json", v.status_json, "viewer", note="the run's figures"),
        Route("GET", "/metrics", v.metrics, "viewer", note="Prometheus text (send the token as Bearer)"),
        Route("GET", "/stream.mjpg", v.stream, "viewer", signed=True, note="MJPEG of source 0"),
        Route("GET", "/stream/{source}.mjpg", v.stream, "viewer", signed=True, note="MJPEG of a source"),
        Route("GET", "/ng/{index}.jpg", v.ng_jpg, "viewer", signed=True, note="a recent NG thumbnail"),
        Route("GET", "/history.json", v.history_json, "viewer", note="the newest results of the record"),
        Route(
            "POST",
            "/api/trigger",
            v.trigger,
            "operator",
            note="run --trigger http: one frame, its verdict",
            action="trigger",
        ),
        Route("POST", "/trigger", v.trigger, "operator", note="alias of POST /api/trigger", action="trigger"),
        Route("GET", "/recipe", v.recipe, "viewer", note="the station's recipes"),
        Route(
            "POST",
            "/api/recipe/active",
            v.recipe,
            "engineer",
            note="select the active recipe (?index= or ?name=)",
            action="select recipe",
        ),
        Route("POST", "/recipe", v.recipe, "engineer", note="alias of POST /api/recipe/active", action="select recipe"),
    ]


def _station_routes(view: Any, api: Any) -> list[Route]:
    """A station's model versions and audit (the older names are aliases)."""
    upload = int(view.server.max_upload_mb * 2**20)
    return [
        Route("GET", "/models.json", api.models, "viewer", note="versions per recipe"),
        Route(
            "POST",
            "/api/deploy",
            api.deploy,
            "engineer",
            body=upload,
            note="a bundle zip → a new version",
            action="deploy",
        ),
        Route(
            "POST", "/deploy", api.deploy, "engineer", body=upload, note="alias of POST /api/deploy", action="deploy"
        ),
        Route(
            "POST",
            "/api/rollback",
            api.rollback,
            "engineer",
            note="back to the model that ran before",
            action="rollback",
        ),
        Route("POST", "/rollback", api.rollback, "engineer", note="alias of POST /api/rollback", action="rollback"),
        Route("GET", "/api/audit", api.audit, "viewer", note="the audit log"),
        Route("GET", "/audit.json", api.audit, "viewer", note="alias of GET /api/audit"),
    ]


def _app_routes(view: Any, api: Any) -> list[Route]:
    """The web app: page shells (public) and the JSON API under them."""
    idle_s = view.sessions.idle_s
    table = [
        Route("GET", "/app", page_shell(None, idle_s), PUBLIC, note="→ /app/live"),
        Route("GET", "/app/", page_shell(None, idle_s), PUBLIC, note="→ /app/live"),
        Route("GET", "/app/login", page_shell(("login", "log in"), idle_s), PUBLIC, note="the login page"),
    ]
    table += [
        Route("GET", f"/app/{p}", page_shell((p, label), idle_s), PUBLIC, note=f"the {label} page (a shell)")
        for p, label in PAGES
    ]
    table += [
        Route("GET", "/api/live", api.live, "viewer", note="the live page's figures (computed once for all pages)"),
        Route("GET", r"/api/live/{source:\d+}.jpg", api.live_jpg, "viewer", note="a source's picture and verdict"),
        Route("GET", "/api/results", api.results_handler, "viewer", note="results (JSON or CSV)"),
        Route(
            "GET",
            "/api/evidence/{rid}/{what:frame.png|heat.jpg}",
            api.evidence,
            "viewer",
            signed=True,
            note="a result's saved frame or the overlay drawn for it",
        ),
        Route("POST", "/api/review", api.review, "operator", note="mark a result good or defect", action="review"),
        Route("GET", "/api/recipes", api.recipes, "viewer", note="recipes with their versions"),
        Route(
            "POST",
            "/api/recipes",
            api.create_recipe,
            "engineer",
            body=RECIPE_BODY,
            note="a new recipe (no model yet; next free PLC index or the one given), kept for the next start",
            action="create recipe",
        ),
        Route(
            "POST",
            "/api/recipes/{name}",
            api.edit_recipe,
            "engineer",
            body=RECIPE_BODY,
            note="rename a recipe created on the box and/or give it another PLC index (not the active one)",
            action="edit recipe",
        ),
        Route(
            "DELETE",
            "/api/recipes/{name}",
            api.delete_recipe,
            "engineer",
            body=RECIPE_BODY,
            note="delete a recipe created on the box (not the active one); its model versions stay on disk",
            action="delete recipe",
        ),
        Route("POST", "/api/preview", api.preview, "engineer", note="what a threshold would change", action="preview"),
        Route(
            "POST",
            "/api/recipe-settings",
            api.settings,
            "engineer",
            note="threshold, review band, min area",
            action="recipe settings",
        ),
        Route(
            "GET",
            "/api/dataset",
            api.dataset,
            "engineer",
            note="reviewed results as a dataset zip",
            action="dataset download",
        ),
        Route("GET", "/api/collect", api.collect, "viewer", note="the on-demand collection's state"),
        Route("POST", "/api/collect", api.collect, "engineer", note="collect the next N good parts", action="collect"),
        Route(
            "GET",
            "/api/collect.zip",
            api.collect_zip,
            "engineer",
            note="the collected parts, zipped",
            action="collect download",
        ),
        Route("GET", "/api/health", api.health, "viewer", note="the Health page's figures"),
        Route("GET", "/api/fit", api.fit, "engineer", note="the box's fit: progress, then its report card"),
        Route("POST", "/api/fit", api.fit, "engineer", action="fit",
              note="fit a new version from a collection (`tiles`: `2x2` … `8x8`, `1x1` the whole frame; absent: the "
                   "live model's grid), or update the live one with the reviewed good parts"),
        Route(
            "POST",
            "/api/fit/{what}",
            api.fit_action,
            "engineer",
            note="cancel the fit, discard it, or deploy it as a new version (what: cancel, discard, deploy)",
            action="fit decision",
        ),
    ]
    return table


def routes_markdown(table: list[Route]) -> str:
    """The route table as docs/api.md shows it (a test keeps the two the same)."""
    rows = ["| method, path | role | what |", "|---|---|---|"]
    rows += [f"| `{r.method} {r.path}` | {r.role} | {r.note} |" for r in table]
    return "\n".join(rows)
