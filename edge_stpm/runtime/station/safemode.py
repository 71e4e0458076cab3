"""Safe mode (``run --config FILE --safe-mode``, what the systemd unit runs): a station file that does not check
— a typo, a model not yet copied, a port taken — does not put the service in a crash loop. The box serves one small
page on the file's ``[http] bind`` (read from the raw TOML when that much parses; otherwise ``FALLBACK_BIND``):
the errors, one per line with their key path, and how to get out; ``/healthz`` answers 503 with the same lines.
systemd is told READY with ``STATUS=safe mode: …`` and gets its watchdog pings (the process is alive and says
what is wrong; restarting would change nothing). SIGHUP — ``systemctl reload`` — checks the file again: when it
passes, the process starts the station in its place (``exec``, the same PID and unit); when not, the page shows
the new errors. SIGTERM stops it. Nothing is inspected in safe mode: the PLC sees no Trigger Ready.

Safe by default, as the station's own server: when the TOML parses, the page takes the file's tokens (``[http]
token``, ``viewer_token``, ``operator_token``, ``engineer_token``; any of them, as ``Authorization: Bearer`` —
never in a URL) and a non-loopback bind needs one — without, the page stays on loopback; when the TOML does not parse,
loopback only. ``/healthz`` answers 503 to anyone, its error lines only with a token. Every error line shown or
logged is passed through ``common.redact`` (a source's password never shows).
"""
from __future__ import annotations

import hmac
import html
import ipaddress
import os
import signal
import sys
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

from edge_stpm.common.errors import UserError
from edge_stpm.common.redact import redact
from edge_stpm.runtime.station.config import read_toml
from edge_stpm.runtime.station.service import notify

FALLBACK_BIND = "127.0.0.1:8080"
TOKEN_KEYS = ("token", "viewer_token", "operator_token", "engineer_token")  # [http] keys; any one opens the page


@dataclass(frozen=True)
class SafeBind:
    """Where safe mode serves and which tokens it takes (empty: none asked); ``note``: why it stayed on loopback."""

    host: str
    port: int
    tokens: tuple[str, ...] = ()
    note: str = ""


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _split(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    p = int(port) if port.strip().isdigit() else 8080
    return host.strip("[]") or "127.0.0.1", p if 1 <= p <= 65535 else 8080


def bind_of(config: Path) -> SafeBind:
    """The file's ``[http] bind`` and tokens when its TOML parses (the same reader as the station's, with the
    Python 3.10 fallback); a non-loopback bind without a token, or a file that does not parse, is loopback."""
    host, port = _split(FALLBACK_BIND)
    try:
        raw = read_toml(Path(config))
    except (UserError, OSError):
        return SafeBind(host, port, note="the station file does not parse: loopback only")
    http = raw.get("http")
    section: dict[str, Any] = http if isinstance(http, dict) else {}
    b = section.get("bind")
    if isinstance(b, str) and ":" in b:
        host, port = _split(b)
    tokens = tuple(t for t in (section.get(k) for k in TOKEN_KEYS) if isinstance(t, str) and t)
    if not tokens and not _loopback(host):
        return SafeBind("127.0.0.1", port, note=f"[http] bind {host}:{port} without a token: loopback only")
    return SafeBind(host, port, tokens)


class SafeMode:
    def __init__(self, config: Path, errors: list[str], check: Callable[[], None],
                 log: Callable[[str], None], tokens: tuple[str, ...] = ()) -> None:
        self.config, self.check, self.log = Path(config), check, log
        self.errors = [redact(e) for e in errors]
        self.tokens = tokens
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.reload = threading.Event()
        self.server: ThreadingHTTPServer | None = None

    def allowed(self, path: str, authorization: str) -> bool:
        """Whether a request may see the errors: always when no token is asked, else with one of the tokens."""
        if not self.tokens:
            return True
        given = authorization[len("Bearer "):].strip() if authorization.startswith("Bearer ") else ""
        return bool(given) and any(hmac.compare_digest(given.encode(), t.encode()) for t in self.tokens)

    def page(self) -> str:
        with self.lock:
            items = "".join(f"<li>{html.escape(e)}</li>" for e in self.errors)
        return (f"<!doctype html><meta charset=utf-8><title>edge-stpm: safe mode</title><body style='font: 16px "
                f"sans-serif; margin: 2em; background: #16181d; color: #e8e8e8'><h1 style='color: #f0a030'>Safe mode"
                f"</h1><p>The station file <code>{html.escape(str(self.config))}</code> did not check, so nothing is "
                f"inspected (the PLC sees no Trigger Ready):</p><ul style='color: #ff6b6b'>{items}</ul><p>Fix the "
                "file (<code>edge-stpm config check FILE</code> says the same), then <code>systemctl reload "
                "edge-stpm</code> (SIGHUP): the station starts when the file checks.</p></body>")

    def serve(self, host: str, port: int) -> None:
        sm = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 — the stdlib's name
                ok = sm.allowed(self.path, self.headers.get("Authorization", ""))
                if self.path.split("?")[0] == "/healthz":  # 503 to a monitor; the lines only with a token
                    with sm.lock:
                        lines = sm.errors if ok else []
                    body = "safe mode\n" + "".join(f"{e}\n" for e in lines)
                    ctype, code = "text/plain; charset=utf-8", 503
                elif not ok:
                    body, ctype, code = "token required\n", "text/plain; charset=utf-8", 401
                else:
                    body, ctype, code = sm.page(), "text/html; charset=utf-8", 200
                data = body.encode()
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        try:
            self.server = ThreadingHTTPServer((host, port), Handler)
        except OSError as exc:
            self.log(f"safe mode: cannot serve the error page on {host}:{port} ({exc.strerror or exc}); the errors "
                     "are in the journal only")
            return
        threading.Thread(target=self.server.serve_forever, name="safe-mode-http", daemon=True).start()
        self.log(f"safe mode: the errors are on http://{host}:{port}/ (and /healthz: 503)")

    def tried_again(self) -> bool:
        """SIGHUP: True when the file now checks."""
        try:
            self.check()
        except UserError as exc:
            with self.lock:
                self.errors = [redact(e) for e in str(exc).splitlines()]
            notify("STATUS=safe mode: " + (self.errors or ["the station file does not check"])[0][:200])
            self.log(f"safe mode: the station file still does not check: {'; '.join(self.errors)}")
            return False
        return True

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


def run(config: Path, errors: list[str], check: Callable[[], None], log: Callable[[str], None]) -> int:
    """Serve safe mode until SIGTERM (returns 0) or until SIGHUP finds the file good (then ``exec`` the same command
    without this process: the station starts)."""
    where = bind_of(config)
    sm = SafeMode(config, errors, check, log, where.tokens)
    if where.note:
        log(f"safe mode: {where.note}")
    sm.serve(where.host, where.port)
    notify("READY=1")
    notify("STATUS=safe mode: " + (sm.errors or ["the station file does not check"])[0][:200])
    log(f"safe mode: {config} does not check — nothing inspected; fix it, then reload (SIGHUP)")
    prev = {s: signal.signal(s, h) for s, h in ((signal.SIGHUP, lambda *_: sm.reload.set()),
                                                (signal.SIGTERM, lambda *_: sm.stop.set()))}
    try:
        while not sm.stop.is_set():  # a watchdog ping every second: well inside any WatchdogSec
            if sm.reload.wait(timeout=1.0):
                sm.reload.clear()
                if sm.tried_again():
                    sm.close()
                    log("safe mode: the station file checks now — starting the station")
                    for s, h in prev.items():
                        signal.signal(s, h)
                    os.execv(sys.executable, [sys.executable, "-m", "edge_stpm.cli", *sys.argv[1:]])
            notify("WATCHDOG=1")
    except KeyboardInterrupt:
        pass
    finally:
        sm.close()
        notify("STOPPING=1")
    return 0
