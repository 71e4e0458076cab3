"""Running a station as a service: the systemd unit ``edge-stpm service`` prints, and the service manager's
notifications (``sd_notify``: READY at start, WATCHDOG while healthy, STOPPING at the end) over the socket systemd
passes in ``NOTIFY_SOCKET`` — a few lines of the documented datagram protocol, so no library is needed (a no-op
outside systemd).

The unit runs the station as a dedicated, unprivileged user (``edge-stpm`` unless ``--user`` says otherwise) in a
sandbox: the whole file system read-only but for the station file's folder, the data folder systemd makes for it
(``StateDirectory=``: ``/var/lib/edge-stpm``, where the record, the outbox, evidence and deployed models go by
default) and the output folders the station file names; no capabilities (unless a port below 1024 is bound: then
only ``CAP_NET_BIND_SERVICE``); cameras through the ``video`` group. Install (as root)::

    useradd --system --user-group --groups video --home-dir /var/lib/edge-stpm --shell /usr/sbin/nologin edge-stpm
    chown -R edge-stpm: /path/to/the/station/folder       # it writes there (drop folder, relative outputs)
    edge-stpm service --config /path/to/station.toml > /etc/systemd/system/edge-stpm.service
    systemctl daemon-reload && systemctl enable --now edge-stpm

edge-stpm itself must be installed where that user can read it (e.g. a venv in /opt/edge-stpm, not under /root).
"""
from __future__ import annotations

import os
import shutil
import socket
import threading
from pathlib import Path
from typing import Callable, Iterable

from edge_stpm.common.errors import UserError
from edge_stpm.runtime.station.config import load

WATCHDOG_SEC = 30
SERVICE_USER = "edge-stpm"
STATE = "edge-stpm"  # StateDirectory=: /var/lib/edge-stpm, the service's data folder ($XDG_DATA_HOME/edge-stpm)
PRIVILEGED_PORT = 1024  # binding below this needs CAP_NET_BIND_SERVICE (Modbus TCP's 502)
SANDBOX = ("NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=read-only", "PrivateTmp=yes",
           "ProtectKernelTunables=yes", "ProtectKernelModules=yes", "ProtectKernelLogs=yes",
           "ProtectControlGroups=yes", "ProtectHostname=yes", "RestrictSUIDSGID=yes",
           "LockPersonality=yes", "RestrictRealtime=yes", "RestrictNamespaces=yes",
           "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK", "SystemCallArchitectures=native",
           "UMask=0027")
# not set, on purpose: PrivateDevices= and ProtectClock= (both put the unit on a device allow-list: no cameras, no
# GPU), MemoryDenyWriteExecute= (ONNX Runtime, CUDA and TensorRT generate code at run time)


def systemd_word(text: str, exec_line: bool = False) -> str:
    """``text`` as one word of a unit file line: ``%`` doubled (systemd specifiers), ``$`` doubled on an Exec line
    (variable expansion), and double-quoted (with ``\\`` and ``\"`` escaped) when it holds white space, quotes,
    backslashes or ``;``. A line break cannot be written: UserError."""
    if "\n" in text or "\r" in text:
        raise UserError(f"a path with a line break cannot go into a systemd unit: {text!r}")
    out = text.replace("%", "%%")
    if exec_line:
        out = out.replace("$", "$$")
    if any(c.isspace() or c in "\"'\\;" for c in out) or not out:
        out = '"' + out.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return out


def station_needs(config: Path) -> tuple[list[Path], bool]:
    """What the station file asks of the sandbox: the folders it writes outside the station folder and the data
    folder (history, outbox, outputs, store, evidence), and whether it binds a port below 1024. A file that does not
    load (``service`` checks it first) asks nothing."""
    try:
        st = load(config)
    except UserError:
        return [], False
    files = [st.run.summary_json, st.outputs.record, st.outputs.events, st.history.db, st.mqtt.outbox]
    folders = [st.outputs.save_anomalies, st.store.root, st.store.drop, st.evidence.folder]
    paths = [Path(p).parent for p in files if p is not None] + [Path(p) for p in folders if p is not None]
    ports = [_port(b) for b in (st.http.bind, st.modbus.bind, st.opcua.bind) if b]
    return paths, any(p is not None and 0 < p < PRIVILEGED_PORT for p in ports)


def _port(bind: str) -> int | None:
    tail = str(bind).rpartition(":")[2] if ":" in str(bind) else str(bind)
    return int(tail) if tail.strip().isdigit() else None


def _writable(config: Path, extra: Iterable[Path]) -> list[str]:
    """ReadWritePaths= words: the station folder (must exist), then the other folders (``-``: ignored while they
    do not exist — create them, owned by the service user), none inside another."""
    base = config.parent
    out: list[Path] = []
    for p in (Path(x).resolve() for x in extra):
        if not any(p == q or q in p.parents for q in [base, *out]):
            out.append(p)
    return [systemd_word(str(base))] + [systemd_word("-" + str(p)) for p in out]


def unit_text(config: Path, exe: str | None = None, user: str | None = None,
              writable: Iterable[Path] | None = None, bind_low_port: bool | None = None) -> str:
    """A systemd unit for ``edge-stpm run --config CONFIG``: restarted on failure, watched (the box pings while
    /healthz would answer 200), logging to the journal, SIGHUP re-reading the station file; run as ``user``
    (default ``edge-stpm``) in a sandbox (module docstring). ``writable`` / ``bind_low_port``: the station's
    output folders and whether it binds a port below 1024 (default: read from the station file)."""
    exe = exe or shutil.which("edge-stpm") or "edge-stpm"
    config = Path(config).resolve()
    if writable is None or bind_low_port is None:
        found, low = station_needs(config)
        writable = found if writable is None else writable
        bind_low_port = low if bind_low_port is None else bind_low_port
    user = user or SERVICE_USER
    if "\n" in user or "\n" in str(config):
        raise UserError("a user or path with a line break cannot go into a systemd unit")
    lines = [
        "# edge-stpm station service. Install (as root): create its user, give it the station folder, then",
        "# save this as /etc/systemd/system/edge-stpm.service and: systemctl daemon-reload && systemctl enable --now "
        "edge-stpm",
        f"#   useradd --system --user-group --groups video --home-dir /var/lib/{STATE} --shell /usr/sbin/nologin "
        f"{user}",
        f"#   chown -R {user}: {config.parent}",
        "[Unit]",
        f"Description=edge-stpm inspection station ({config.name.replace('%', '%%')})",
        "After=network-online.target",
        "Wants=network-online.target",
        "",
        "[Service]",
        "Type=notify",
        "NotifyAccess=main",
        f"ExecStart={systemd_word(exe, True)} run --config {systemd_word(str(config), True)} --headless --safe-mode",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Restart=on-failure",
        "RestartSec=5",
        f"WatchdogSec={WATCHDOG_SEC}",
        "TimeoutStopSec=30",
        "StandardOutput=journal",
        "StandardError=journal",
        "SyslogIdentifier=edge-stpm",
        f"User={systemd_word(user)}",
        "SupplementaryGroups=video",
        f"StateDirectory={STATE}",
        "StateDirectoryMode=0750",
        f"WorkingDirectory=%S/{STATE}",
        "Environment=XDG_DATA_HOME=%S",  # data_dir() → /var/lib/edge-stpm: the record, outbox, models, evidence
        *SANDBOX,
        "ReadWritePaths=" + " ".join(_writable(config, writable)),
        *_capabilities(bool(bind_low_port)),
        "", "[Install]", "WantedBy=multi-user.target", "",
    ]
    return "\n".join(lines)


def _capabilities(bind_low_port: bool) -> list[str]:
    """None at all, or only CAP_NET_BIND_SERVICE for a port below 1024 (e.g. Modbus TCP on 502)."""
    if not bind_low_port:
        return ["# a port below 1024 (Modbus TCP 502) would need: AmbientCapabilities=CAP_NET_BIND_SERVICE and "
                "CapabilityBoundingSet=CAP_NET_BIND_SERVICE", "CapabilityBoundingSet=", "AmbientCapabilities="]
    return ["# the station binds a port below 1024: only that capability",
            "CapabilityBoundingSet=CAP_NET_BIND_SERVICE", "AmbientCapabilities=CAP_NET_BIND_SERVICE"]


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
