"""Saved evidence: for every NG result (and a sample of OK ones) the full frame as captured (PNG, lossless: it can be
reviewed and reused for training) and the overlay the live view drew for it (a JPEG: colours, outline, banner),
named in the record's ``evidence`` table, kept under a disk budget with a retention policy (NG frames ``ng_days``,
sampled OK frames ``ok_days``; when the budget is hit the oldest evidence goes first). Not required: a full disk
costs evidence (counted, said once), never a verdict or a record row.
"""
from __future__ import annotations

import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2

from edge_stpm.common.errors import UserError
from edge_stpm.common.files import write_bytes
from edge_stpm.runtime.loop.sinks.base import Result, Sink
from edge_stpm.runtime.loop.sinks.record import connect


@dataclass
class EvidencePolicy:
    folder: Path
    budget_mb: float = 2048.0
    ng_days: float = 90.0
    ok_days: float = 7.0
    ok_every: int = 100  # one OK frame in this many is kept (0: none), for drift checks and training
    min_free_mb: float = 512.0  # the disk keeps at least this much free: older evidence is deleted first


OVERLAY_SIDE = 800  # the saved overlay's longer side, pixels (a review screen's picture; the frame PNG keeps all)


def overlay_jpeg(r: Result, side: int = OVERLAY_SIDE) -> bytes:
    """What the live view drew for this result — the frame with the overlay's colours, the defect outline, the colour
    bar and the verdict banner (``InspectionResult.overlay``) — as a JPEG at most ``side`` pixels on its longer side:
    the Review page shows the operator where the model looked, in the colours of the line's screen."""
    img = r.inspection.overlay(r.image)
    h, w = img.shape[:2]
    if max(h, w) > side:
        f = side / max(h, w)
        img = cv2.resize(img, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)
    return cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 85])[1].tobytes()


class EvidenceSink(Sink):
    """Writes each kept result's frame and heatmap, then its ``evidence`` row; retention every ``check_every``."""

    name = "evidence"
    queue_size = 256
    batch_max = 64  # the rows of the results that queued up meanwhile: one transaction (one fsync)
    batch_linger_s = 0.05

    def __init__(self, policy: EvidencePolicy, record: Path, check_every: int = 50) -> None:
        self.policy, self.record, self.check_every = policy, Path(record), check_every
        self.con: sqlite3.Connection | None = None
        self.saved = self.deleted = self.failed = 0
        self.n_ok = 0

    def open(self) -> None:
        self.con = connect(self.record)
        self.policy.folder.mkdir(parents=True, exist_ok=True)
        self.retain()

    def kind(self, r: Result) -> str | None:
        if r.inspection.verdict != "OK":
            return r.inspection.verdict.lower()
        self.n_ok += 1
        return "ok" if self.policy.ok_every and self.n_ok % self.policy.ok_every == 1 else None

    def wants(self, result: Result) -> bool:
        return self.kind(result) is not None

    def take(self, r: Result) -> None:
        self.take_batch([r])

    def take_batch(self, results: list[Result]) -> None:
        """Each result's files, then their rows in one transaction."""
        assert self.con is not None
        rows = [row for row in (self._files(r) for r in results) if row is not None]
        if rows:
            with self.con:
                self.con.executemany("INSERT OR REPLACE INTO evidence VALUES (?, ?, ?, ?, ?, ?)", rows)
        before = self.saved
        self.saved += len(rows)
        if self.saved // self.check_every != before // self.check_every:
            self.retain()

    def _files(self, r: Result) -> tuple[Any, ...] | None:
        kind = "ok" if r.inspection.verdict == "OK" else r.inspection.verdict.lower()
        day = time.strftime("%Y-%m-%d", time.gmtime(r.wall_time))
        frame = self.policy.folder / day / f"{r.result_id}.png"
        heat = frame.with_name(f"{r.result_id}_heat.jpg")
        try:
            data = cv2.imencode(".png", r.image)[1].tobytes()
            write_bytes(frame, data)
            hm = overlay_jpeg(r)
            write_bytes(heat, hm)
        except (OSError, UserError) as exc:  # write_bytes says a failed write as a UserError (a full disk, mostly)
            frame.unlink(missing_ok=True)  # a frame without its heatmap is not kept either
            self.failed += 1
            if self.failed == 1:
                why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
                self.log(f"evidence not saved ({why}): verdicts and the record go on; the oldest evidence is "
                         "deleted to make room")
            self.retain(force_free=True)
            return None
        return (r.result_id, r.wall_time, kind, str(frame), str(heat), len(data) + len(hm))

    def log(self, text: str) -> None:  # replaced by the runner's logger when run in the loop
        print(f"warning: {text}")

    def _delete(self, rows: list[tuple[str, str, str]]) -> None:
        assert self.con is not None
        for _rid, frame, heat in rows:
            for f in (frame, heat):
                if f:
                    Path(f).unlink(missing_ok=True)
        with self.con:
            self.con.executemany("DELETE FROM evidence WHERE result_id = ?", [(r[0],) for r in rows])
        self.deleted += len(rows)

    def retain(self, force_free: bool = False) -> None:
        """Age limits per kind, then the oldest first while over the budget or short of free disk."""
        assert self.con is not None
        now = time.time()
        old = self.con.execute("SELECT result_id, frame, heatmap FROM evidence WHERE (kind = 'ok' AND time < ?) OR "
                               "(kind != 'ok' AND time < ?)", (now - self.policy.ok_days * 86400,
                                                               now - self.policy.ng_days * 86400)).fetchall()
        if old:
            self._delete(old)
        for _ in range(1000):
            used = (self.con.execute("SELECT COALESCE(SUM(bytes), 0) FROM evidence").fetchone()[0]) / 2**20
            free = _free_mb(self.policy.folder)
            if used <= self.policy.budget_mb and free >= self.policy.min_free_mb and not force_free:
                break
            rows = self.con.execute("SELECT result_id, frame, heatmap FROM evidence ORDER BY time LIMIT 20").fetchall()
            if not rows:
                break
            self._delete(rows)
            force_free = False

    def close(self) -> None:
        if self.con is not None:
            self.con.close()
            self.con = None

    def gauges(self) -> dict[str, tuple[str, float]]:
        return {"evidence_saved": ("Evidence items saved (frame + heatmap)", float(self.saved)),
                "evidence_deleted": ("Evidence items deleted by retention", float(self.deleted)),
                "evidence_failed": ("Evidence items not saved (disk full or unwritable)", float(self.failed))}


def _free_mb(folder: Path) -> float:
    try:
        st = os.statvfs(folder)
    except OSError:
        return float("inf")
    return st.f_bavail * st.f_frsize / 2**20


def usage(record: Path) -> dict[str, Any]:
    """Evidence kept per kind: items and MB (for the health page)."""
    con = connect(Path(record), readonly=True)
    try:
        rows = con.execute("SELECT kind, COUNT(*), COALESCE(SUM(bytes), 0) FROM evidence GROUP BY kind").fetchall()
    except sqlite3.DatabaseError:
        rows = []
    finally:
        con.close()
    return {k: {"items": n, "mb": b / 2**20} for k, n, b in rows}
