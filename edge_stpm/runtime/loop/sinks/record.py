"""The inspection record: every result in an embedded SQLite database (WAL, one fsync per commit), with retention
by age and size, queried by ``edge-stpm history`` and the HTTP view.

One row per inspected frame: time, source, trigger id, verdict, score, thresholds in force, model sha256,
snapshot path, capture→verdict latency, camera data. ``result_id`` is unique per box and sortable
(``<run start UTC>-<sequence>``); the MQTT messages carry the same id and fields, so a central database can
land them idempotently (``INSERT … ON CONFLICT(result_id) DO NOTHING``).
"""
from __future__ import annotations

import csv
import io
import json
import re
import sqlite3
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

from edge_stpm.contract.errors import UserError
from edge_stpm.runtime.loop.sinks.base import Result, Sink

SCHEMA_VERSION = 3
VERDICTS = ("OK", "NG", "REVIEW")  # REVIEW: inside a recipe's review band (a person decides)
APPLICATION_ID = 0x45535452  # "ESTR": SQLite's application_id of an edge-stpm inspection record
COLUMNS = ("result_id", "time", "time_iso", "source", "source_spec", "frame", "trigger_id", "verdict", "score",
           "normalised_score", "image_threshold", "pixel_threshold", "model_sha256", "snapshot", "verdict_ms",
           "camera", "recipe_index", "recipe_name", "defect_area")
# the audit log (runtime/station/audit.py): every change that reached the box — who, when, what, before / after
AUDIT_SCHEMA = ("CREATE TABLE IF NOT EXISTS audit (id INTEGER PRIMARY KEY AUTOINCREMENT, time REAL NOT NULL, "
                "time_iso TEXT NOT NULL, who TEXT NOT NULL, action TEXT NOT NULL, recipe TEXT, before TEXT, "
                "after TEXT, outcome TEXT NOT NULL, detail TEXT)",
                "CREATE INDEX IF NOT EXISTS audit_time ON audit(time)",
                # saved evidence (sinks/evidence.py): the full frame as captured and its heatmap, per result
                "CREATE TABLE IF NOT EXISTS evidence (result_id TEXT PRIMARY KEY, time REAL NOT NULL, kind TEXT NOT "
                "NULL, frame TEXT NOT NULL, heatmap TEXT, bytes INTEGER NOT NULL)",
                "CREATE INDEX IF NOT EXISTS evidence_time ON evidence(time)",
                # review marks (the web app's review page): one per result, who and when
                "CREATE TABLE IF NOT EXISTS reviews (result_id TEXT PRIMARY KEY, mark TEXT NOT NULL CHECK (mark IN "
                "('good', 'defect')), defect_type TEXT, who TEXT NOT NULL, time REAL NOT NULL)")
INSPECTIONS = """CREATE TABLE IF NOT EXISTS {name} (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  result_id TEXT NOT NULL UNIQUE,
  time REAL NOT NULL, time_iso TEXT NOT NULL,
  source INTEGER NOT NULL, source_spec TEXT NOT NULL, frame INTEGER NOT NULL, trigger_id INTEGER,
  verdict TEXT NOT NULL CHECK (verdict IN ('OK', 'NG', 'REVIEW')),
  score REAL NOT NULL, normalised_score REAL NOT NULL, image_threshold REAL NOT NULL, pixel_threshold REAL NOT NULL,
  model_sha256 TEXT NOT NULL, snapshot TEXT, verdict_ms REAL, camera TEXT,
  recipe_index INTEGER, recipe_name TEXT, defect_area INTEGER
);"""
# schema 1 → 2: the recipe that judged a result and its largest defect region (older rows read them as null), and
# the audit log
MIGRATIONS = {1: ("ALTER TABLE inspections ADD COLUMN recipe_index INTEGER",
                  "ALTER TABLE inspections ADD COLUMN recipe_name TEXT",
                  "ALTER TABLE inspections ADD COLUMN defect_area INTEGER") + AUDIT_SCHEMA,
              # schema 2 → 3: the third verdict, REVIEW (SQLite changes a CHECK only by copying the table)
              2: (INSPECTIONS.format(name="inspections_v3"),
                  f"INSERT INTO inspections_v3 (id, {', '.join(COLUMNS)}) SELECT id, {', '.join(COLUMNS)} FROM inspections",
                  "DROP TABLE inspections", "ALTER TABLE inspections_v3 RENAME TO inspections",
                  "CREATE INDEX IF NOT EXISTS inspections_time ON inspections(time)")}
SCHEMA = INSPECTIONS.format(name="inspections") + """
CREATE INDEX IF NOT EXISTS inspections_time ON inspections(time);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
""" + "\n".join(f"{sql};" for sql in AUDIT_SCHEMA)


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def result_row(r: Result, model_sha256: str) -> dict[str, Any]:
    """The record's (and the MQTT message's) fields of one result; a station recipe's model sha256 wins over
    ``model_sha256`` (the run's one model)."""
    ins = r.inspection
    rec = ins.recipe or {}
    return {"result_id": r.result_id, "time": r.wall_time, "time_iso": iso(r.wall_time),
            "source": r.source, "source_spec": r.spec, "frame": r.frame_index, "trigger_id": r.trigger_id,
            "verdict": ins.verdict, "score": ins.score, "normalised_score": ins.normalised_score,
            "image_threshold": ins.image_threshold, "pixel_threshold": ins.pixel_threshold,
            "model_sha256": rec.get("model_sha256", model_sha256), "snapshot": r.snapshot,
            "verdict_ms": round(r.verdict_ms, 3), "camera": r.camera or None,
            "recipe_index": rec.get("index"), "recipe_name": rec.get("name"), "defect_area": ins.defect_area}


def connect(path: Path, readonly: bool = False) -> sqlite3.Connection:
    """Open (or create) the record; a path that cannot be written, or a file that is not this record (another
    application's SQLite file, a newer schema), is one UserError naming the file — and nothing is written into it.
    A record of an older schema is migrated when opened for writing."""
    path = Path(path)
    try:
        if readonly:
            if not path.is_file():
                raise UserError(f"no inspection record at {path} (edge-stpm run writes it; see --history-db)")
            con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
            _identify(con, path)
            return con
        path.parent.mkdir(parents=True, exist_ok=True)
        fresh = not path.exists() or path.stat().st_size == 0
        con = sqlite3.connect(str(path), timeout=10, check_same_thread=False)
        version = SCHEMA_VERSION if fresh else _identify(con, path)
        if fresh:
            con.execute("PRAGMA auto_vacuum=INCREMENTAL")  # takes effect on a new file only
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=FULL")  # WAL + FULL: a committed row survives a power cut
        with con:
            if fresh:
                con.executescript(SCHEMA)
            for v in range(version, SCHEMA_VERSION):
                for sql in MIGRATIONS[v]:
                    con.execute(sql)
            con.execute(f"PRAGMA application_id={APPLICATION_ID}")
            con.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
    except sqlite3.DatabaseError as exc:
        raise UserError(f"cannot use the inspection record {path}: {exc}") from None
    except OSError as exc:
        raise UserError(f"cannot create the inspection record {path}: {exc.strerror or exc}") from None
    return con


def select_columns(con: sqlite3.Connection) -> str:
    """``COLUMNS`` as a SELECT list for this record: a column an older schema lacks reads as null."""
    have = {r[1] for r in con.execute("PRAGMA table_info(inspections)")}
    return ", ".join(c if c in have else f"NULL AS {c}" for c in COLUMNS)


def _identify(con: sqlite3.Connection, path: Path) -> int:
    """The schema version of an existing record; UserError for any other file. A schema-1 record (before
    application ids) is known by its ``meta`` and ``inspections`` tables."""
    app = con.execute("PRAGMA application_id").fetchone()[0]
    tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    version = None
    if {"meta", "inspections"} <= tables:
        row = con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        version = int(row[0]) if row and str(row[0]).isdigit() else None
    if app not in (0, APPLICATION_ID) or version is None or (app == 0 and version != 1):
        con.close()
        raise UserError(f"{path} is not an edge-stpm inspection record (SQLite application id {app:#x}, tables "
                        f"{', '.join(sorted(tables)) or 'none'}); it is left untouched — give another --history-db")
    if version > SCHEMA_VERSION:
        con.close()
        raise UserError(f"{path}: inspection record of schema {version}, newer than this edge-stpm reads "
                        f"({SCHEMA_VERSION}); upgrade edge-stpm")
    return version


class RecordSink(Sink):
    """Every result into the record, in order, as soon as inference ends (lossless; required: a record that
    cannot be written is the loop's error state). Retention: rows older than ``keep_days`` and, past
    ``max_mb``, the oldest rows are deleted (checked every ``check_every`` rows)."""

    name = "record"
    lossless = True
    required = True
    queue_size = 4096

    def __init__(self, path: Path, model_sha256: str, keep_days: float = 90.0, max_mb: float = 2048.0,
                 check_every: int = 500) -> None:
        self.path, self.sha = Path(path), model_sha256
        self.keep_days, self.max_mb, self.check_every = keep_days, max_mb, check_every
        self.con: sqlite3.Connection | None = None
        self.rows = 0
        self.deleted = 0

    def open(self) -> None:
        self.con = connect(self.path)
        try:
            self.con.execute("BEGIN IMMEDIATE")
            self.con.rollback()
        except sqlite3.OperationalError as exc:
            raise UserError(f"cannot write the inspection record {self.path}: {exc}") from None
        self.retain()

    batch_max = 256
    batch_linger_s = 0.02  # group commit: at most ~20 ms of results wait for their fsync

    def take(self, r: Result) -> None:
        self.take_batch([r])

    def take_batch(self, results: list[Result]) -> None:
        """One transaction (one fsync) for the results that queued up meanwhile."""
        assert self.con is not None
        rows = []
        for r in results:
            row = result_row(r, self.sha)
            row["camera"] = json.dumps(row["camera"]) if row["camera"] else None
            rows.append([row[c] for c in COLUMNS])
        with self.con:
            self.con.executemany(f"INSERT INTO inspections ({', '.join(COLUMNS)}) VALUES "
                                 f"({', '.join('?' * len(COLUMNS))})", rows)
        before = self.rows
        self.rows += len(rows)
        if self.rows // self.check_every != before // self.check_every:
            self.retain()

    def size_mb(self) -> float:
        return sum(p.stat().st_size for p in (self.path, Path(f"{self.path}-wal")) if p.exists()) / 2**20

    def retain(self) -> None:
        """Delete what is older than ``keep_days``, then the oldest tenth while over ``max_mb``."""
        assert self.con is not None
        with self.con:
            cur = self.con.execute("DELETE FROM inspections WHERE time < ?", (time.time() - self.keep_days * 86400,))
            self.deleted += cur.rowcount
        for _ in range(20):
            if self.size_mb() <= self.max_mb:
                break
            with self.con:
                n = self.con.execute("SELECT COUNT(*) FROM inspections").fetchone()[0]
                if n == 0:
                    break
                cur = self.con.execute("DELETE FROM inspections WHERE id IN (SELECT id FROM inspections ORDER BY id "
                                       "LIMIT ?)", (max(1, n // 10),))
                self.deleted += cur.rowcount
            self.con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self.con.execute("PRAGMA incremental_vacuum")

    def close(self) -> None:
        if self.con is not None:
            self.con.execute("PRAGMA wal_checkpoint(PASSIVE)")
            self.con.close()
            self.con = None


# --- reading: edge-stpm history ----------------------------------------------------------------------------------

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|h|d)$")


def parse_time(text: str, now: float | None = None) -> float:
    """'2h', '30m', '7d', '45s' (ago) or an ISO time ('2026-12-01T08:00', UTC unless it says otherwise)."""
    now = time.time() if now is None else now
    m = _DURATION.match(text.strip())
    if m:
        return now - float(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
    try:
        dt = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UserError(f"--since takes a duration such as 2h, 30m, 7d or an ISO time, not {text!r}") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


def query(path: Path, since: float | None = None, verdict: str | None = None, source: int | None = None,
          limit: int = 1000, recipe: str | None = None) -> list[dict[str, Any]]:
    """The newest ``limit`` rows matching, oldest first; ``recipe`` matches a recipe's name or index."""
    con = connect(path, readonly=True)
    cols = select_columns(con)
    where, args = [], []
    if recipe is not None:
        if "NULL AS recipe_name" in cols:
            con.close()
            return []
        where.append("(recipe_name = ? OR CAST(recipe_index AS TEXT) = ?)")
        args += [recipe, recipe]
    if since is not None:
        where.append("time >= ?")
        args.append(since)
    if verdict:
        where.append("verdict = ?")
        args.append(verdict)
    if source is not None:
        where.append("source = ?")
        args.append(source)
    sql = (f"SELECT {cols} FROM inspections" + (" WHERE " + " AND ".join(where) if where else "")
           + " ORDER BY id DESC LIMIT ?")
    try:
        rows = [dict(zip(COLUMNS, r)) for r in con.execute(sql, (*args, limit))]
    except sqlite3.DatabaseError as exc:
        raise UserError(f"cannot read the inspection record {path}: {exc}") from None
    finally:
        con.close()
    for r in rows:
        r["camera"] = json.loads(r["camera"]) if r["camera"] else None
    return rows[::-1]


def to_csv(rows: Iterable[dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(COLUMNS), lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow(r | {"camera": json.dumps(r["camera"]) if r.get("camera") else ""})
    return buf.getvalue()
