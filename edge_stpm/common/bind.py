"""A listening address as every server of the box takes it (``--http``, ``--modbus``, ``--opcua``, the station
file's binds): ``HOST:PORT``, ``:PORT`` or ``PORT`` (host 127.0.0.1), ``[::1]:PORT`` for IPv6."""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from edge_stpm.common.errors import UserError


@dataclass(frozen=True)
class Bind:
    host: str
    port: int

    @property
    def loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


def parse_bind(text: str, what: str = "--http") -> Bind:
    """``HOST:PORT``, ``:PORT`` or ``PORT`` (host 127.0.0.1); ``[::1]:PORT`` for IPv6."""
    t = text.strip()
    host, port = "127.0.0.1", t
    if t.startswith("["):
        host, _, port = t[1:].partition("]:")
    elif ":" in t:
        host, _, port = t.rpartition(":")
        host = host or "127.0.0.1"
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise UserError(f"{what} {text!r}: expected HOST:PORT, e.g. 127.0.0.1:8080")
    return Bind(host, int(port))
