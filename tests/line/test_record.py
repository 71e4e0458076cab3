"""The inspection record and the outbox's bound: a record that cannot be written is one line before any work, a
file that is not a record is refused, a full outbox drops its oldest unsent rows (counted), /history.json serves
the newest rows, and `history` filters and exports."""
from __future__ import annotations

import json
import sqlite3
import urllib.request
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edge_stpm.common.bind import parse_bind
from edge_stpm.runtime.web.live import LiveView
from edge_stpm.runtime.loop.pipeline import RunOptions, run
from edge_stpm.runtime.loop.sinks.mqtt import Outbox
from edge_stpm.runtime.loop.sinks.record import RecordSink, query
from edge_stpm.runtime.loop.sources import open_source
from edge_stpm.cli import app
from edge_stpm.common.errors import UserError
from edge_stpm.runtime.inspector import Inspector

runner = CliRunner()


def one_error(res, pattern: str) -> None:
    lines = [l for l in res.output.strip().splitlines() if l.strip()]
    assert res.exit_code == 2 and "Traceback" not in res.output, res.output
    assert len([l for l in lines if l.startswith("error:")]) == 1 and pattern in res.output, res.output


def test_record_on_an_unwritable_path_or_a_foreign_file_is_one_line(exported: Path, synth_dir: Path,
                                                                   tmp_path: Path) -> None:
    video = str(synth_dir / "video.avi")
    # /proc refuses new files even to root (a chmod'ed folder would not stop root)
    one_error(runner.invoke(app, ["run", "--model", str(exported / "model_fp32.onnx"), "--source", video, "--headless",
                                  "--history-db", "/proc/edge-stpm-test/history.db"]), "inspection record")
    foreign = tmp_path / "notes.db"
    foreign.write_text("not a database at all " * 100)
    one_error(runner.invoke(app, ["run", "--model", str(exported / "model_fp32.onnx"), "--source", video, "--headless",
                                  "--history-db", str(foreign)]), str(foreign))
    assert foreign.read_text().startswith("not a database")  # left as it was
    with pytest.raises(UserError, match="no inspection record"):
        query(tmp_path / "missing.db")


def test_every_frame_recorded_and_history_filters(exported: Path, synth_dir: Path, tmp_path: Path) -> None:
    db = tmp_path / "h.db"
    res = runner.invoke(app, ["run", "--model", str(exported / "model_fp32.onnx"), "--source",
                              str(synth_dir / "video.avi"), "--headless", "--history-db", str(db),
                              "--summary-json", str(tmp_path / "s.json")])
    assert res.exit_code == 0, res.output
    s = json.loads((tmp_path / "s.json").read_text())
    rows = query(db, limit=1000)
    assert len(rows) == 60 and [r["frame"] for r in rows] == list(range(60))
    assert [r["frame"] for r in rows if r["verdict"] == "NG"] == s["ng_indices"]
    assert len({r["result_id"] for r in rows}) == 60 and all(len(r["model_sha256"]) == 64 for r in rows)
    con = sqlite3.connect(str(db))
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    out = tmp_path / "ng.csv"
    res = runner.invoke(app, ["history", "--db", str(db), "--verdict", "NG", "--format", "csv", "--out", str(out)])
    assert res.exit_code == 0, res.output
    lines = out.read_text().splitlines()
    assert lines[0].startswith("result_id,") and len(lines) == 1 + len(s["ng_indices"])
    res = runner.invoke(app, ["history", "--db", str(db), "--since", "1h", "--limit", "5", "--format", "json"])
    assert res.exit_code == 0 and [r["frame"] for r in json.loads(res.output)] == list(range(55, 60))
    one_error(runner.invoke(app, ["history", "--db", str(db), "--since", "yesterday"]), "--since")
    one_error(runner.invoke(app, ["history", "--db", str(db), "--format", "csv", "--out", str(tmp_path)]), "folder")


def test_retention_by_age_and_size(tmp_path: Path) -> None:
    sink = RecordSink(tmp_path / "r.db", "sha", keep_days=1.0)
    sink.open()
    con = sink.con
    with con:
        con.executemany("INSERT INTO inspections (result_id, time, time_iso, source, source_spec, frame, verdict, "
                        "score, normalised_score, image_threshold, pixel_threshold, model_sha256) "
                        "VALUES (?, ?, '', 0, 's', 0, 'OK', 0, 0, 1, 1, 'sha')",
                        [(f"old{i}", 1000.0 + i) for i in range(50)] + [(f"new{i}", 4e9 + i) for i in range(50)])
    sink.retain()
    left = [r[0] for r in con.execute("SELECT result_id FROM inspections ORDER BY id")]
    assert left == [f"new{i}" for i in range(50)] and sink.deleted == 50
    sink.close()


def test_full_outbox_drops_oldest_unsent_counted(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db", max_rows=10)
    dropped = box.put_many([(f"r{i:03d}", "t", "{}") for i in range(30)])
    assert dropped == 20 and box.dropped == 20 and box.depth() == 10
    assert [r[0] for r in box.head(10)] == list(range(21, 31))  # the newest 10 (ids 21..30) wait, in order
    box.close()


def test_http_view_serves_recent_results_from_the_record(exported: Path, synth_dir: Path, tmp_path: Path) -> None:
    db = tmp_path / "h.db"
    insp = Inspector.load(exported / "model_fp32.onnx", "onnxruntime")
    view = LiveView(parse_bind("127.0.0.1:0"), None, {"model": "m"}, history=db).start()
    try:
        s = run(insp, open_source(str(synth_dir / "video.avi")),
                RunOptions(headless=True, http=view, sinks=[RecordSink(db, "sha")]))
        got = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{view.port}/history.json?limit=5&verdict=NG",
                                                timeout=10).read())
    finally:
        view.close()
        insp.close()
    ng = [i for i in s.ng_indices][-5:]
    assert [r["frame"] for r in got] == ng and all(r["verdict"] == "NG" for r in got)


def test_another_applications_sqlite_file_is_refused_untouched(tmp_path: Path) -> None:
    """Before: any SQLite file was taken as the record (tables created in it) and `history` read it. Now the record
    and the outbox carry an application id and a schema version; another file is refused and left as it was."""
    from edge_stpm.runtime.loop.sinks.record import connect

    other = tmp_path / "mes.db"
    con = sqlite3.connect(other)
    con.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, part TEXT)")
    con.execute("INSERT INTO orders (part) VALUES ('housing')")
    con.commit()
    con.close()
    before = other.read_bytes()
    for opener in (lambda: connect(other), lambda: query(other), lambda: Outbox(other, 10)):
        with pytest.raises(UserError, match="is not an edge-stpm"):
            opener()
    assert other.read_bytes() == before
    res = runner.invoke(app, ["history", "--db", str(other)])
    one_error(res, "not an edge-stpm inspection record")


def test_a_schema_1_record_is_migrated_and_still_read(tmp_path: Path) -> None:
    from edge_stpm.runtime.loop.sinks.record import APPLICATION_ID, SCHEMA_VERSION, connect

    old = tmp_path / "history.db"
    con = sqlite3.connect(old)  # the schema-1 record as run wrote it until 2026-12-03
    con.executescript("""CREATE TABLE inspections (id INTEGER PRIMARY KEY AUTOINCREMENT, result_id TEXT NOT NULL UNIQUE,
      time REAL NOT NULL, time_iso TEXT NOT NULL, source INTEGER NOT NULL, source_spec TEXT NOT NULL,
      frame INTEGER NOT NULL, trigger_id INTEGER, verdict TEXT NOT NULL, score REAL NOT NULL,
      normalised_score REAL NOT NULL, image_threshold REAL NOT NULL, pixel_threshold REAL NOT NULL,
      model_sha256 TEXT NOT NULL, snapshot TEXT, verdict_ms REAL, camera TEXT);
      CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
      INSERT INTO meta VALUES ('schema_version', '1');
      INSERT INTO inspections VALUES (1, 'r-1', 1.0, 'x', 0, 'cam', 0, NULL, 'NG', 2.0, 2.0, 1.0, 1.0, 'sha', NULL,
                                      1.0, NULL);""")
    con.commit()
    con.close()
    rows = query(old)  # read as it is, before any migration
    assert rows[0]["result_id"] == "r-1" and rows[0]["recipe_name"] is None
    assert rows[0]["score_scale"] == "threshold"  # every row before schema 4 was on the old scale
    connect(old).close()  # opened for writing: migrated
    con = sqlite3.connect(old)
    assert con.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    assert con.execute("SELECT value FROM meta").fetchone()[0] == str(SCHEMA_VERSION)
    con.close()
    assert query(old)[0]["verdict"] == "NG" and query(old)[0]["score_scale"] == "threshold"
