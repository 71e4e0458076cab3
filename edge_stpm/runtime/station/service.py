"""Running a station as a service: the systemd unit ``edge-stpm service`` prints, and the service manager's
notifications (``sd_notify``: READY at start, WATCHDOG while healthy, STOPPING at the end) over the socket systemd
passes in ``NOTIFY_SOCKET`` — a few lines of the documented datagram protocol, so no library is needed (a no-op
outside systemd)."""
from __future__ import annotations

import os
import shlex
import socket
import threading
from pathlib import Path
from typing import Callable

WATCHDOG_SEC = 30


def unit_text(config: Path, exe: str | None = None, user: str | None = None) -> str:
    """A systemd unit for ``edge-stpm run --config CONFIG``: restarted on failure, watched (the box pings while
    /healthz would answer 200), logging to the journal, SIGHUP re-reading the station file."""
    import shutil

    exe = exe or shutil.which("edge-stpm") or "edge-stpm"
    config = Path(config).resolve()
    lines = [
        "[Unit]",
        f"Description=edge-stpm inspection station ({config.name})",
        "After=network-online.target",
        "Wants=network-online.target",
        "",
        "[Service]",
        "Type=notify",
        "NotifyAccess=main",
        f"ExecStart={shlex.quote(exe)} run --config {shlex.quote(str(config))} --headless --safe-mode",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Restart=on-failure",
        "RestartSec=5",
        f"WatchdogSec={WATCHDOG_SEC}",
        "TimeoutStopSec=30",
        "StandardOutput=journal",
        "StandardError=journal",
        "SyslogIdentifier=edge-stpm",
    ]
    if user:
        lines.append(f"User={user}")
    lines += ["", "[Install]", "WantedBy=multi-user.target", ""]
    return "\n".join(lines)


def notify(message: str) -> bool:
    """Send one sd_notify message; False when not run by systemd (no NOTIFY_SOCKET)."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return False
    if path.startswith("@"):
        path = "\0" + path[1:]  # an abstract socket
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        try:  # never wait: a receiver that stopped reading must not stall the box (a full queue blocks a send)
            s.sendto(message.encode(), socket.MSG_DONTWAIT, path)
        except OSError:
            return False
    return True


class Watchdog:
    """READY=1 now; WATCHDOG=1 every third of the watchdog interval while ``healthy()`` says so (so systemd
    restarts a box whose sources stopped or whose outputs fail); STOPPING=1 on close."""

    def __init__(self, healthy: Callable[[], bool]) -> None:
        self.healthy = healthy
        self.stop = threading.Event()
        usec = int(os.environ.get("WATCHDOG_USEC", "0") or 0)
        self.period = usec / 3e6 if usec > 0 else None
        self.thread: threading.Thread | None = None
        if notify("READY=1") and self.period:
            self.thread = threading.Thread(target=self._ping, name="sd-watchdog", daemon=True)
            self.thread.start()

    def _ping(self) -> None:
        while not self.stop.wait(self.period):
            if self.healthy():
                notify("WATCHDOG=1")

    def close(self) -> None:
        self.stop.set()
        notify("STOPPING=1")
        if self.thread is not None:
            self.thread.join(5)
