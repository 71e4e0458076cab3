"""Bad credentials, throttled per client: after ``max_failures`` within a window the client is locked out, the lock
doubling on each further lockout. One throttle for every door that takes a password or a token: the HTTP server's
login and bearer tokens (``runtime/web/server.py``) and the OPC UA user (``runtime/line/opcua.py``)."""
from __future__ import annotations

import collections
import ipaddress
import threading
import time


def throttle_key(client: str) -> str:
    """What a lockout counts and locks: an IPv4 address as it is; an IPv6 address's /64 network (one host is
    handed a whole /64 and may use any address in it, so counting single IPv6 addresses would let a script step
    past a lockout with each new address); an IPv4-mapped IPv6 address as its IPv4 address."""
    try:
        ip = ipaddress.ip_address(client)
    except ValueError:
        return client
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class Throttle:
    """Failed credential checks per client (an IPv4 address, an IPv6 /64: ``throttle_key``): after ``max_failures``
    within ``window_s`` the client is locked out for ``lock_s`` (doubling on each further lockout, up to
    ``max_lock_s``). Loopback and ``never_lock`` are never locked (the box itself, the PLC). Says which failures to
    audit: the first ``audit_per_window`` of a window and each lockout — a flood of bad logins writes a bounded
    number of rows."""

    def __init__(
        self,
        never_lock: tuple[str, ...] = (),
        max_failures: int = 10,
        window_s: float = 60.0,
        lock_s: float = 60.0,
        max_lock_s: float = 900.0,
        audit_per_window: int = 3,
        max_clients: int = 10_000,
    ) -> None:
        self.never = set(never_lock)
        self.max_failures, self.window_s, self.lock_s, self.max_lock_s = max_failures, window_s, lock_s, max_lock_s
        self.audit_per_window, self.max_clients = audit_per_window, max_clients
        self._fails: collections.OrderedDict[str, collections.deque[float]] = collections.OrderedDict()
        self._locked: dict[str, tuple[float, float]] = {}  # throttle key → (until, lock length)
        self.refused = 0  # requests answered 429
        self._lock = threading.Lock()

    def exempt(self, client: str) -> bool:
        if client in self.never:
            return True
        try:
            return ipaddress.ip_address(client).is_loopback
        except ValueError:
            return False

    def locked_for(self, client: str) -> float:
        """Seconds left of the client's lockout (0: not locked)."""
        with self._lock:
            until = self._locked.get(throttle_key(client), (0.0, 0.0))[0]
        return max(0.0, until - time.monotonic())

    def fail(self, client: str) -> tuple[bool, float]:
        """One failed check: (audit it?, seconds of a lockout that starts now, else 0)."""
        now, key = time.monotonic(), throttle_key(client)
        with self._lock:
            q = self._fails.setdefault(key, collections.deque())
            self._fails.move_to_end(key)
            while len(self._fails) > self.max_clients:
                self._fails.popitem(last=False)
            while q and now - q[0] > self.window_s:
                q.popleft()
            q.append(now)
            if len(q) < self.max_failures or self.exempt(client):  # the box itself is never locked out
                return len(q) <= self.audit_per_window, 0.0
            q.clear()
            prev = self._locked.get(key, (0.0, 0.0))[1]
            length = min(self.max_lock_s, prev * 2 if prev else self.lock_s)
            self._locked[key] = (now + length, length)
            if len(self._locked) > self.max_clients:  # bounded: forget locks long over (their doubling too)
                for k in [k for k, (until, _) in self._locked.items() if until < now - self.max_lock_s]:
                    del self._locked[k]
            return True, length
