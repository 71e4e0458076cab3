"""Safe mode (``run --config FILE --safe-mode``, what the systemd unit runs): a station file that does not check
— a typo, a model not yet copied, a port taken — does not put the service in a crash loop. The box serves one small
page on the file's ``[http] bind`` (read from the raw TOML when that much parses; otherwise ``FALLBACK_BIND``):
the errors, one per line with their key path, and how to get out; ``/healthz`` answers 503 with the same lines.
systemd is told READY with ``STATUS=safe mode: …`` and gets its watchdog pings (the process is alive and says
what is wrong; restarting would change nothing). SIGHUP — ``systemctl reload`` — checks the file again: when it
passes, the process starts the station in its place (``exec``, the same PID and unit); when not, the page shows
the new errors. SIGTERM stops it. Nothing is inspected in safe mode: the PLC sees no Trigger Ready.
"""
from __future__ import annotations

import html
import os
import signal
import sys
import threading
import tomllib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

from edge_stpm.runtime.station.service import notify

FALLBACK_BIND = "127.0.0.1:8080"


def bind_of(config: Path) -> tuple[str, int]:
    """The file's ``[http] bind`` when it can be read, else ``FALLBACK_BIND``."""
    text = FALLBACK_BIND
    try:
        raw = tomllib.loads(Path(config).read_text(encoding="utf-8"))
        b = (raw.get("http") or {}).get("bind")
        if isinstance(b, str) and ":" in b:
            text = b
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, AttributeError):
        pass
    host, _, port = text.rpartition(":")
    try:
        p = int(port)
    except ValueError:
        p = 8080
    return host.strip("[]") or "127.0.0.1", p if 1 <= p <= 65535 else 8080


class SafeMode:
    def __init__(self, config: Path, errors: list[str], check: Callable[[], None],
                 log: Callable[[str], None]) -> None:
        self.config, self.errors, self.check, self.log = Path(config), errors, check, log
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.reload = threading.Event()
        self.server: ThreadingHTTPServer | None = None

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
                if self.path.split("?")[0] == "/healthz":
                    with sm.lock:
                        body, ctype = ("safe mode\n" + "\n".join(sm.errors) + "\n"), "text/plain; charset=utf-8"
                    code = 503
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
        from edge_stpm.contract.errors import UserError

        try:
            self.check()
        except UserError as exc:
            with self.lock:
                self.errors = str(exc).splitlines()
            notify("STATUS=safe mode: " + self.errors[0][:200])
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
    sm = SafeMode(config, errors, check, log)
    sm.serve(*bind_of(config))
    notify("READY=1")
    notify("STATUS=safe mode: " + errors[0][:200])
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
