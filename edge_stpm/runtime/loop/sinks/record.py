"""The inspection record: every result in an embedded SQLite database (WAL, one fsync per commit), with retention
by age and size, queried by ``edge-stpm history`` and the HTTP view.

One row per inspected frame: time, source, trigger id, verdict, score, thresholds in force, model sha256,
snapshot path, capture→verdict latency, camera data. ``result_id`` is unique per box and sortable
(``<run start UTC>-<sequence>``); the MQTT messages carry the same id and fields, so a central database can
land them idempotently (``INSERT … ON CONFLICT(result_id) DO NOTHING``).
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import re
import sqlite3
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

from rich.table import Table

from edge_stpm.common.cells import safe_row
from edge_stpm.common.errors import UserError
from edge_stpm.common.files import write_text
from edge_stpm.common.redact import redact
from edge_stpm.runtime.loop.sinks.base import Result, Sink

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

SCHEMA_VERSION = 4
VERDICTS = ("OK", "NG", "REVIEW")  # REVIEW: inside a recipe's review band (a person decides)
APPLICATION_ID = 0x45535452  # "ESTR": SQLite's application_id of an edge-stpm inspection record
COLUMNS_V3 = ("result_id", "time", "time_iso", "source", "source_spec", "frame", "trigger_id", "verdict", "score",
              "normalised_score", "image_threshold", "pixel_threshold", "model_sha256", "snapshot", "verdict_ms",
              "camera", "recipe_index", "recipe_name", "defect_area")
# score_scale: which scale normalised_score is on (contract/scale.py): "good" (0 = typical good part, 1 = threshold)
# or "threshold" (the old scale, 0 = a zero score; every row written before schema 4)
COLUMNS = COLUMNS_V3 + ("score_scale",)
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
  recipe_index INTEGER, recipe_name TEXT, defect_area INTEGER,
  score_scale TEXT NOT NULL DEFAULT 'threshold'
);"""
ADD_SCALE = "ALTER TABLE inspections ADD COLUMN score_scale TEXT NOT NULL DEFAULT 'threshold'"
# schema 1 → 2: the recipe that judged a result and its largest defect region (older rows read them as null), and
# the audit log
MIGRATIONS = {1: ("ALTER TABLE inspections ADD COLUMN recipe_index INTEGER",
                  "ALTER TABLE inspections ADD COLUMN recipe_name TEXT",
                  "ALTER TABLE inspections ADD COLUMN defect_area INTEGER") + AUDIT_SCHEMA,
              # schema 2 → 3: the third verdict, REVIEW (SQLite changes a CHECK only by copying the table)
              2: (INSPECTIONS.format(name="inspections_v3"),
                  f"INSERT INTO inspections_v3 (id, {', '.join(COLUMNS_V3)}) SELECT id, {', '.join(COLUMNS_V3)} "
                  "FROM inspections",
                  "DROP TABLE inspections", "ALTER TABLE inspections_v3 RENAME TO inspections",
                  "CREATE INDEX IF NOT EXISTS inspections_time ON inspections(time)"),
              # schema 3 → 4: the score scale of each row (older rows were all on the old scale); a table copied
              # by 2 → 3 already has it
              3: (ADD_SCALE,)}
SCHEMA = INSPECTIONS.format(name="inspections") + """
CREATE INDEX IF NOT EXISTS inspections_time ON inspections(time);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
""" + "\n".join(f"{sql};" for sql in AUDIT_SCHEMA)


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def result_row(r: Result, model_sha256: str) -> dict[str, Any]:
    """The record's (and the MQTT message's) fields of one result; a station recipe's model sha256 wins over
    ``model_sha256`` (the run's one model). The source spec is redacted: a camera URL's password is never stored
    or published."""
    ins = r.inspection
    rec = ins.recipe or {}
    return {"result_id": r.result_id, "time": r.wall_time, "time_iso": iso(r.wall_time),
            "source": r.source, "source_spec": redact(r.spec), "frame": r.frame_index, "trigger_id": r.trigger_id,
            "verdict": ins.verdict, "score": ins.score, "normalised_score": ins.normalised_score,
            "image_threshold": ins.image_threshold, "pixel_threshold": ins.pixel_threshold,
            "model_sha256": rec.get("model_sha256", model_sha256), "snapshot": r.snapshot,
            "verdict_ms": round(r.verdict_ms, 3), "camera": r.camera or None,
            "recipe_index": rec.get("index"), "recipe_name": rec.get("name"), "defect_area": ins.defect_area,
            "score_scale": ins.score_scale}


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
                    if sql == ADD_SCALE and "score_scale" in _columns(con):
                        continue
                    con.execute(sql)
            con.execute(f"PRAGMA application_id={APPLICATION_ID}")
            con.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
    except sqlite3.DatabaseError as exc:
        raise UserError(f"cannot use the inspection record {path}: {exc}") from None
    except OSError as exc:
        raise UserError(f"cannot create the inspection record {path}: {exc.strerror or exc}") from None
    return con


def _columns(con: sqlite3.Connection) -> set[str]:
    return {r[1] for r in con.execute("PRAGMA table_info(inspections)")}


def select_columns(con: sqlite3.Connection) -> str:
    """``COLUMNS`` as a SELECT list for this record: a column an older schema lacks reads as null (the score scale
    as the old one, ``threshold``)."""
    have = _columns(con)
    return ", ".join(c if c in have else "'threshold' AS score_scale" if c == "score_scale" else f"NULL AS {c}"
                     for c in COLUMNS)


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


class WriteFailed(RuntimeError):
    """A sink's write failed after its retries; the message says how many results are kept to retry and how many
    were dropped (``lost``: dropped by this failure)."""

    def __init__(self, text: str, lost: int = 0) -> None:
        super().__init__(text)
        self.lost = lost


TRANSIENT = (sqlite3.OperationalError, OSError)  # a full disk, an I/O error, a lock held too long: worth retrying


@contextlib.contextmanager
def rolled_back_on_error(con: sqlite3.Connection) -> Iterator[None]:
    """``with con:`` (commit, or roll back on an error) that also rolls back when the commit itself fails, so a
    retry starts a fresh transaction instead of adding its rows to the failed one's."""
    try:
        with con:
            yield
    except BaseException:
        if con.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                con.rollback()
        raise


class Retrying:
    """Writes that must not be lost silently (the record, the MQTT outbox): a failed write is tried ``tries`` times
    (``backoff_s`` after the first failure, × 4 each time), then its rows are kept in memory — at most ``cap``, the
    oldest dropped beyond — and written before the next rows. What is finally dropped is counted (``lost``) and said
    through ``log`` (the first drop of a failure at once, then at most once a minute); every failed write raises
    ``WriteFailed`` so the sink runner counts it and a required sink shows its error state. ``what`` names the
    store in those lines."""

    def __init__(self, what: str, write: Callable[[list[Any]], None], log: Callable[[str], None],
                 cap: int = 20_000, tries: int = 3, backoff_s: float = 0.05) -> None:
        self.what, self.write_rows, self.log = what, write, log
        self.cap, self.tries, self.backoff_s = cap, tries, backoff_s
        self.pending: list[Any] = []
        self.lost = 0
        self._said_at: float | None = None
        self._said_lost = 0

    def write(self, rows: list[Any]) -> None:
        """``rows`` after those still pending, in one write; WriteFailed when that failed (the rows kept or, for an
        error no retry can mend, dropped — counted and said)."""
        todo = self.pending + rows
        if not todo:
            return
        tries = 1 if self.pending else self.tries  # already failing: one try per batch, the sink is not held up
        for k in range(tries):
            try:
                self.write_rows(todo)
            except TRANSIENT as exc:
                error: Exception = exc
                if k + 1 < tries:
                    time.sleep(self.backoff_s * 4 ** k)
                continue
            except Exception as exc:  # noqa: BLE001 — not mended by a retry: dropped, counted, said
                self.pending = []
                why = redact(f"{type(exc).__name__}: {exc}")
                self._drop(len(todo), why, now=True)
                raise WriteFailed(f"{self.what}: {why} — {len(todo)} results dropped", len(todo)) from exc
            if self.pending:
                self.log(f"{self.what}: written again — the {len(self.pending)} results kept in memory since the "
                         f"write failed are in ({self.lost} dropped in all)")
            self.pending, self._said_at = [], None
            return
        over = max(0, len(todo) - self.cap)
        self.pending = todo[over:]
        if over:
            self._drop(over, f"more than {self.cap} results waiting in memory")
        raise WriteFailed(f"{self.what}: {redact(str(error))} after {tries} tr{'y' if tries == 1 else 'ies'} — "
                          f"{len(self.pending)} results kept in memory and retried with the next ones ({self.lost} "
                          "dropped in all)", over)

    def flush(self) -> None:
        """At close: one more full try for what is pending; what still cannot be written is dropped, counted and
        said (WriteFailed)."""
        if not self.pending:
            return
        kept, self.pending = self.pending, []
        try:
            self.write(kept)
        except WriteFailed:
            left, self.pending = len(self.pending), []
            if not left:  # an error no retry mends: already dropped and said
                raise
            self._drop(left, "closing while the write still fails", now=True)
            raise WriteFailed(f"{self.what}: still failing at close — {left} results dropped ({self.lost} dropped "
                              "in all)", left) from None

    def _drop(self, n: int, why: str, now: bool = False) -> None:
        self.lost += n
        t = time.monotonic()
        if now or self._said_at is None or t - self._said_at >= 60.0:  # said, at most once a minute while failing
            self.log(f"{self.what}: {self.lost - self._said_lost} results dropped ({why}); {self.lost} dropped in all")
            self._said_at, self._said_lost = t, self.lost


class RecordSink(Sink):
    """Every result into the record, in order, as soon as inference ends (lossless; required: a record that
    cannot be written is the loop's error state). A failed write is retried and its rows kept in memory
    (``Retrying``): nothing is dropped silently. Retention: rows older than ``keep_days`` and, past ``max_mb``,
    first the audit log's rows beyond its share (``AUDIT_SHARE`` of ``max_mb``), then the oldest inspections
    (checked every ``check_every`` rows)."""

    name = "record"
    lossless = True
    required = True
    queue_size = 4096

    def __init__(self, path: Path, model_sha256: str, keep_days: float = 90.0, max_mb: float = 2048.0,
                 check_every: int = 500, log: Callable[[str], None] | None = None,
                 keep_in_memory: int = 20_000) -> None:
        self.path, self.sha = Path(path), model_sha256
        self.keep_days, self.max_mb, self.check_every = keep_days, max_mb, check_every
        self.con: sqlite3.Connection | None = None
        self.rows = 0
        self.deleted = 0
        self.audit_deleted = 0
        self.log = log or logging.getLogger(__name__).warning
        self.retry = Retrying(f"inspection record {self.path}", self._insert, self.log, cap=keep_in_memory)

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
        """One transaction (one fsync) for the results that queued up meanwhile (and any kept from a failed write)."""
        rows = []
        for r in results:
            row = result_row(r, self.sha)
            row["camera"] = json.dumps(row["camera"]) if row["camera"] else None
            rows.append([row[c] for c in COLUMNS])
        self.retry.write(rows)

    def _insert(self, rows: list[list[Any]]) -> None:
        assert self.con is not None
        with rolled_back_on_error(self.con):
            self.con.executemany(f"INSERT INTO inspections ({', '.join(COLUMNS)}) VALUES "
                                 f"({', '.join('?' * len(COLUMNS))})", rows)
        before = self.rows
        self.rows += len(rows)
        if self.rows // self.check_every != before // self.check_every:
            try:
                self.retain()
            except (sqlite3.Error, OSError) as exc:  # the rows are in; retention is tried again at the next check
                self.log(f"inspection record {self.path}: retention failed ({exc}); tried again later")

    def size_mb(self) -> float:
        return sum(p.stat().st_size for p in (self.path, Path(f"{self.path}-wal")) if p.exists()) / 2**20

    def retain(self) -> None:
        """Delete what is older than ``keep_days``; then, while over ``max_mb``, the audit rows beyond their share
        first, else the oldest tenth of the inspections (an audit flood never evicts quality records)."""
        assert self.con is not None
        with self.con:
            cur = self.con.execute("DELETE FROM inspections WHERE time < ?", (time.time() - self.keep_days * 86400,))
            self.deleted += cur.rowcount
        for _ in range(20):
            if self.size_mb() <= self.max_mb:
                break
            with self.con:
                trimmed = trim_audit(self.con, AUDIT_SHARE * self.max_mb * 2**20)
                self.audit_deleted += trimmed
                if not trimmed:
                    n = self.con.execute("SELECT COUNT(*) FROM inspections").fetchone()[0]
                    if n == 0:
                        break
                    cur = self.con.execute("DELETE FROM inspections WHERE id IN (SELECT id FROM inspections ORDER BY "
                                           "id LIMIT ?)", (max(1, n // 10),))
                    self.deleted += cur.rowcount
            # the freed pages leave the file: executescript runs the pragma to its end (execute() frees one page
            # only), then the checkpoint moves the shrunk database out of the WAL and empties it
            self.con.executescript("PRAGMA incremental_vacuum;")
            self.con.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def gauges(self) -> dict[str, tuple[str, float]]:
        return {"record_pending": ("results kept in memory after a failed record write, retried",
                                   len(self.retry.pending)),
                "record_lost": ("results that could not be written to the record and were dropped", self.retry.lost)}

    def close(self) -> None:
        if self.con is not None:
            try:
                self.retry.flush()
            finally:
                self.con.execute("PRAGMA wal_checkpoint(PASSIVE)")
                self.con.close()
                self.con = None


AUDIT_SHARE = 0.10  # of the record's max_mb the audit log may keep when the record is over its size
# the bytes an audit row takes, estimated from its values (SQLite has no per-table size without the dbstat table)
_AUDIT_BYTES = ("SELECT COUNT(*), COALESCE(SUM(40 + length(time_iso) + length(who) + length(action) + "
                "COALESCE(length(recipe), 0) + COALESCE(length(before), 0) + COALESCE(length(after), 0) + "
                "length(outcome) + COALESCE(length(detail), 0)), 0) FROM audit")


def trim_audit(con: sqlite3.Connection, max_bytes: float) -> int:
    """Delete audit rows until the rest take at most ``max_bytes`` (estimated): refused requests first (a flood of
    bad logins), oldest first, then the oldest of any kind — as ``Audit.trim`` does by row count. Returns how many
    rows went (0 when the audit log is within it, or the record has none). Call inside a transaction."""
    if not con.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='audit'").fetchone():
        return 0
    n, nbytes = con.execute(_AUDIT_BYTES).fetchone()
    if n == 0 or nbytes <= max_bytes:
        return 0
    over, gone = n - int(n * max_bytes / nbytes), 0  # rows of the average size beyond the budget
    for where in ("WHERE outcome = 'refused'", ""):
        if gone < over:
            gone += con.execute(f"DELETE FROM audit WHERE id IN (SELECT id FROM audit {where} ORDER BY id LIMIT ?)",
                                (over - gone,)).rowcount
    return gone


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
    where: list[str] = []
    args: list[str | float | int] = []
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
        rows = [dict(zip(COLUMNS, r, strict=True)) for r in con.execute(sql, (*args, limit))]
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
        w.writerow(safe_row(r | {"camera": json.dumps(r["camera"]) if r.get("camera") else ""}))
    return buf.getvalue()


def print_history(out: Console, db: Path, since: str | None, verdict: str, source: int | None, limit: int,
                  recipe: str | None, fmt: str, out_file: Path | None) -> None:
    """``edge-stpm history``: the rows ``query`` finds (``verdict`` "any": all), as a table on ``out`` or as CSV /
    JSON written to ``out_file`` (stdout without)."""
    rows = query(db, parse_time(since) if since else None, None if verdict == "any" else verdict, source, limit,
                 recipe)
    if fmt == "table":
        out.print(_history_table(rows, db))
        return
    text = to_csv(rows) if fmt == "csv" else json.dumps(rows, indent=1) + "\n"
    if out_file is None:
        sys.stdout.write(text)
    else:
        write_text(out_file, text)
        out.print(f"{len(rows)} results written to {out_file}")


def _history_table(rows: list[dict[str, Any]], db: Path) -> Table:
    t = Table(title=f"{len(rows)} results from {db}")
    for c in ("time (UTC)", "source", "frame", "trigger", "recipe", "verdict", "normalised", "snapshot"):
        t.add_column(c)
    for r in rows:
        t.add_row(r["time_iso"], str(r["source"]), str(r["frame"]),
                  "" if r["trigger_id"] is None else str(r["trigger_id"]),
                  "" if r["recipe_name"] is None else f"{r['recipe_index']} {r['recipe_name']}",
                  r["verdict"], f"{r['normalised_score']:.2f}", r["snapshot"] or "")
    return t
