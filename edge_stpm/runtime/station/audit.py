"""The audit log: every change that reaches the box — start and stop, deploys, rollbacks, recipe and threshold
changes, config reloads, refused requests — one row each in the inspection record's ``audit`` table (who, when,
what, the recipe, before and after, the outcome), committed before the change is answered; optionally forwarded to
syslog as RFC 5424 messages (Python's SysLogHandler over UDP, with the RFC 5424 header written here: the handler
itself writes only the ``<PRI>`` part).

The audit table has its own retention (``max_rows``, the oldest refused rows going first, then the oldest of any
kind), trimmed every ``TRIM_EVERY`` writes: a flood of refused requests can never grow the record at the
inspections' expense (the record's own retention measures inspections).
"""
from __future__ import annotations

import json
import logging
import logging.handlers
import os
import socket
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from edge_stpm.common.errors import UserError
from edge_stpm.runtime.loop.sinks.record import connect, iso

APP = "edge-stpm"


class Rfc5424Formatter(logging.Formatter):
    """``1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID STRUCTURED-DATA MSG`` (RFC 5424 §6; the handler adds <PRI>)."""

    def __init__(self) -> None:
        super().__init__()
        self.host = socket.gethostname() or "-"

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"
        sd = getattr(record, "sd", "-")
        return f"1 {ts} {self.host} {APP} {os.getpid()} {getattr(record, 'msgid', 'audit')} {sd} {record.getMessage()}"


def _sd_value(v: Any) -> str:
    return str(v).replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def parse_syslog(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (UDP) of a syslog receiver; port 1–65535."""
    host, sep, port = str(text).rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise UserError(f"audit syslog {text!r}: give HOST:PORT with a port 1–65535")
    return host.strip("[]"), int(port)


class Audit:
    """Writes audit rows into the record at ``db`` (None: no record, rows are only forwarded/logged) and to syslog."""

    MAX_ROWS = 100_000  # the audit table's own retention
    TRIM_EVERY = 500

    def __init__(self, db: Path | None, syslog: str | None = None, max_rows: int = MAX_ROWS) -> None:
        self.max_rows, self._writes = max_rows, 0

        self.lock = threading.Lock()
        self.db = Path(db) if db is not None else None
        self.con: sqlite3.Connection | None = connect(Path(db)) if db is not None else None
        self.logger: logging.Logger | None = None
        if syslog:
            host, port = parse_syslog(syslog)
            h = logging.handlers.SysLogHandler(address=(host, port), facility=logging.handlers.SysLogHandler.LOG_AUTH)
            h.append_nul = False
            h.setFormatter(Rfc5424Formatter())
            self.logger = logging.getLogger(f"edge_stpm.audit.{id(self)}")
            self.logger.propagate = False
            self.logger.setLevel(logging.INFO)
            self.logger.addHandler(h)

    def write(self, who: str, action: str, recipe: str | None = None, before: Any = None, after: Any = None,
              outcome: str = "ok", detail: str = "") -> dict[str, Any]:
        """One audit row (committed before this returns) and its syslog message."""
        t = time.time()
        row = {"time": t, "time_iso": iso(t), "who": who, "action": action, "recipe": recipe,
               "before": None if before is None else json.dumps(before, default=str),
               "after": None if after is None else json.dumps(after, default=str), "outcome": outcome,
               "detail": detail}
        with self.lock:
            if self.con is not None:
                with self.con:
                    cur = self.con.execute(f"INSERT INTO audit ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                                           list(row.values()))
                row["id"] = cur.lastrowid
                self._writes += 1
                if self._writes % self.TRIM_EVERY == 0:
                    self.trim()
        if self.logger is not None:
            sd = (f'[audit@32473 who="{_sd_value(who)}" action="{_sd_value(action)}" '
                  f'recipe="{_sd_value(recipe or "")}" outcome="{_sd_value(outcome)}"]')
            text = f"{action} {recipe or ''} by {who}: {outcome}" + (f" — {detail}" if detail else "")
            self.logger.log(logging.INFO if outcome == "ok" else logging.WARNING, text, extra={"sd": sd})
        return row

    def trim(self) -> int:
        """Delete rows beyond ``max_rows``: refused ones first (oldest first), then the oldest. Caller holds the
        lock."""
        if self.con is None:
            return 0
        n = self.con.execute("SELECT COUNT(*) FROM audit").fetchone()[0]
        over, gone = n - self.max_rows, 0
        with self.con:
            for where in ("WHERE outcome = 'refused'", ""):
                if over - gone <= 0:
                    break
                gone += self.con.execute(f"DELETE FROM audit WHERE id IN (SELECT id FROM audit {where} ORDER BY id "
                                         "LIMIT ?)", (over - gone,)).rowcount
        return gone

    def close(self) -> None:
        with self.lock:
            if self.con is not None:
                self.con.close()
                self.con = None
        if self.logger is not None:
            for h in list(self.logger.handlers):
                h.close()
                self.logger.removeHandler(h)


def query(db: Path, since: float | None = None, action: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
    """The newest ``limit`` audit rows matching, oldest first."""
    con = connect(Path(db), readonly=True)
    try:
        if not con.execute("SELECT 1 FROM sqlite_master WHERE name='audit'").fetchone():
            return []
        where: list[str] = []
        args: list[float | str] = []
        if since is not None:
            where.append("time >= ?")
            args.append(since)
        if action:
            where.append("action = ?")
            args.append(action)
        cols = ("id", "time", "time_iso", "who", "action", "recipe", "before", "after", "outcome", "detail")
        sql = (f"SELECT {', '.join(cols)} FROM audit" + (" WHERE " + " AND ".join(where) if where else "")
               + " ORDER BY id DESC LIMIT ?")
        rows = [dict(zip(cols, r, strict=True)) for r in con.execute(sql, (*args, limit))]
    finally:
        con.close()
    for r in rows:
        for k in ("before", "after"):
            r[k] = json.loads(r[k]) if r[k] else None
    return rows[::-1]
