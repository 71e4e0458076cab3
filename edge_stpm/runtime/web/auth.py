"""Roles and sessions. Three roles, each given by a token in the station file: viewer (sees), operator (also
reviews), engineer (also thresholds, recipes, deploy, rollback). A browser logs in with its token once and then
sends the session id in a header (``X-Session``) — no cookies, so no cross-site request can carry it (nothing for
CSRF to ride on); a plant's MES sends its token as ``Authorization: Bearer``. A session unused for ``idle_s`` is
locked (401: log in again); ``POST /api/logout`` ends it on the server; at most ``max_sessions`` live at once (the
least recently used goes first), idle ones purged at each login."""
from __future__ import annotations

import hmac
import secrets
import threading
import time
from dataclasses import dataclass, field

ROLES = ("viewer", "operator", "engineer")
RANK = {r: i for i, r in enumerate(ROLES)}


@dataclass
class Sessions:
    tokens: dict[str, str]  # role → token (roles without a token cannot be logged into)
    idle_s: float = 900.0
    open_viewer: bool = False  # loopback without any token: viewing needs no login
    open_as: str = "viewer"  # ... and the role such an open view gets (a plain run's: operator, to trigger)
    max_sessions: int = 256
    _live: dict[str, tuple[str, float]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def role_of_token(self, token: str | None) -> str | None:
        if not token:
            return None
        best = None
        for role, t in self.tokens.items():
            if t and hmac.compare_digest(t.encode(), token.encode()):
                best = role if best is None or RANK[role] > RANK[best] else best
        return best

    def login(self, token: str) -> tuple[str, str] | None:
        """(session id, role) for a valid token, else None."""
        role = self.role_of_token(token)
        if role is None:
            return None
        sid = secrets.token_urlsafe(24)
        now = time.monotonic()
        with self._lock:
            for old in [k for k, (_, t) in self._live.items() if now - t > self.idle_s]:
                del self._live[old]
            while len(self._live) >= self.max_sessions:
                del self._live[min(self._live, key=lambda k: self._live[k][1])]
            self._live[sid] = (role, now)
        return sid, role

    @property
    def open_role(self) -> str | None:
        """The role of a request without credentials (None: it must log in)."""
        return self.open_as if self.open_viewer else None

    def count(self) -> int:
        with self._lock:
            return len(self._live)

    def role_of_session(self, sid: str | None) -> str | None:
        """The session's role, its idle clock reset; None for an unknown or locked (idle) session."""
        if not sid:
            return None
        now = time.monotonic()
        with self._lock:
            got = self._live.get(sid)
            if got is None:
                return None
            if now - got[1] > self.idle_s:
                del self._live[sid]
                return None
            self._live[sid] = (got[0], now)
            return got[0]

    def logout(self, sid: str | None) -> None:
        with self._lock:
            self._live.pop(sid or "", None)

    def resolve(self, session: str | None, bearer: str | None) -> str | None:
        """The role a request carries: its session's, its bearer token's, or viewer on an open loopback view."""
        role = self.role_of_session(session) or self.role_of_token(bearer)
        return role or ("viewer" if self.open_viewer else None)


def allows(role: str | None, needed: str) -> bool:
    return role is not None and RANK[role] >= RANK[needed]
