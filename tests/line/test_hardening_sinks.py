"""Hardening of what the box stores and publishes (issue 37): no camera password in the record or in MQTT; safe
mode that starts on Python 3.10, takes the station file's tokens and redacts its error lines; a sandboxed systemd
unit run by its own user; atomic writes that fsync the folder and never touch the process umask; a record batch or
an outbox write that fails is retried and kept, what is finally dropped counted and said; record retention that
never evicts inspections for a flood of audit rows."""
from __future__ import annotations

import ast
import json
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from edge_stpm.common import files
from edge_stpm.runtime.inspector import InspectionResult
from edge_stpm.runtime.loop.sinks.base import Result, SinkRunner
from edge_stpm.runtime.loop.sinks.mqtt import MqttSink, Outbox
from edge_stpm.runtime.loop.sinks.record import RecordSink, WriteFailed, query
from edge_stpm.runtime.station import safemode
from edge_stpm.runtime.station.service import unit_text

ROOT = Path(__file__).resolve().parents[2]
SPEC = "rtsp://admin:s3cretPW@10.0.0.5:554/stream1"


def _result(i: int, spec: str = SPEC) -> Result:
    ins = InspectionResult(score=2.0, normalised_score=2.0, ng=True, model_map=np.zeros((4, 4), np.float32),
                           frame_shape=(4, 4), fit="stretch", pixel_threshold=1.0, image_threshold=1.0)
    return Result(seq=i, source=0, spec=spec, frame_index=i, image=np.zeros((4, 4, 3), np.uint8), inspection=ins,
                  t_capture=0.0, t_verdict=0.001, wall_time=time.time(), read_ms=0.0, infer_ms=1.0,
                  result_id=f"20260101T000000Z-{i:06d}")


# --- 1. secrets ------------------------------------------------------------------------------------------------

def test_record_row_and_mqtt_payload_hold_no_camera_password(tmp_path: Path) -> None:
    rec = RecordSink(tmp_path / "h.db", "sha")
    rec.open()
    rec.take_batch([_result(0), _result(1)])
    rec.close()
    rows = query(tmp_path / "h.db")
    assert [r["source_spec"] for r in rows] == ["rtsp://admin:***@10.0.0.5:554/stream1"] * 2
    raw = (tmp_path / "h.db").read_bytes() + (Path(f"{tmp_path / 'h.db'}-wal").read_bytes()
                                              if Path(f"{tmp_path / 'h.db'}-wal").exists() else b"")
    assert b"s3cretPW" not in raw, "the password is nowhere in the record file"

    sink = MqttSink("mqtt://127.0.0.1:1", "line/{source}", tmp_path / "o.db", "sha")
    sink.outbox = Outbox(tmp_path / "o.db", 100)  # into the outbox only: no broker needed to see the payload
    sink.take_batch([_result(2)])
    payload = json.loads(sink.outbox.head(1)[0][2])
    assert payload["source_spec"] == "rtsp://admin:***@10.0.0.5:554/stream1" and "s3cretPW" not in json.dumps(payload)
    # a record row written before redaction (catch_up re-queues such rows) is redacted on the way out too
    _, _, text = sink.message({"result_id": "x", "source": 0, "source_spec": SPEC})
    assert "s3cretPW" not in text and "admin:***@10.0.0.5" in text
    sink.outbox.close()


def test_mqtt_message_at_a_real_broker_holds_no_password(tmp_path: Path) -> None:
    from helpers.line_parts import MOSQUITTO, Subscriber, broker

    if MOSQUITTO is None:
        pytest.skip("mosquitto is not installed (apt-get install mosquitto; .ci/run installs it)")
    with broker(tmp_path) as b:
        sub = Subscriber(b.port)
        assert sub.subscribed.wait(10)
        sink = MqttSink(f"mqtt://127.0.0.1:{b.port}", "line/{source}", tmp_path / "o.db", "sha", drain_s=10)
        sink.open()
        sink.take_batch([_result(0)])
        sink.close()
        sub.wait_for(1, 20)
        sub.close()
    assert len(sub.messages) >= 1
    assert all("s3cretPW" not in json.dumps(m) and m["source_spec"].startswith("rtsp://admin:***@")
               for m in sub.messages)


# --- 2. safe mode on Python 3.10 and its own server --------------------------------------------------------------

def _guarded(tree: ast.AST) -> set[int]:
    """Line numbers of imports inside ``try: … except ImportError/ModuleNotFoundError`` or ``if sys.version_info``."""
    ok: set[int] = set()
    for node in ast.walk(tree):
        body: list[ast.stmt] = []
        if isinstance(node, ast.Try) and any(
                isinstance(h.type, ast.Name) and h.type.id in ("ImportError", "ModuleNotFoundError")
                or isinstance(h.type, ast.Tuple) and any(getattr(e, "id", "") in ("ImportError", "ModuleNotFoundError")
                                                         for e in h.type.elts) for h in node.handlers):
            body = node.body
        elif isinstance(node, ast.If) and "version_info" in ast.unparse(node.test):
            body = node.body + node.orelse
        for stmt in body:
            ok |= {n.lineno for n in ast.walk(stmt) if isinstance(n, (ast.Import, ast.ImportFrom))}
    return ok


def test_no_module_imports_tomllib_unguarded() -> None:
    """tomllib is Python 3.11+: on 3.10 (supported) an unguarded import kills the module — safe mode crash-looped."""
    bad = []
    for path in sorted((ROOT / "edge_stpm").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        ok = _guarded(tree)
        for n in ast.walk(tree):
            names = [a.name for a in n.names] if isinstance(n, ast.Import) else (
                [n.module or ""] if isinstance(n, ast.ImportFrom) else [])
            if any(x.split(".")[0] == "tomllib" for x in names) and n.lineno not in ok:
                bad.append(f"{path.relative_to(ROOT)}:{n.lineno}")
    assert not bad, f"tomllib imported without a Python 3.10 fallback: {bad}"


def test_safe_mode_type_checks_for_python_3_10(tmp_path: Path) -> None:
    pytest.importorskip("mypy")
    res = subprocess.run([sys.executable, "-m", "mypy", "--python-version", "3.10", "--follow-imports=silent",
                          "--no-incremental", "--cache-dir", str(tmp_path / "mypy"),
                          "edge_stpm/runtime/station/safemode.py"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    lines = [line for line in res.stdout.splitlines() if "safemode.py" in line and "tomllib" in line]
    assert not lines, res.stdout


def test_safe_mode_binds_by_the_file_tokens(tmp_path: Path) -> None:
    st = tmp_path / "station.toml"
    st.write_text('[http]\nbind = "0.0.0.0:8099"\nviewer_token = "viewer-token-123"\n')
    b = safemode.bind_of(st)
    assert (b.host, b.port, b.tokens) == ("0.0.0.0", 8099, ("viewer-token-123",))
    st.write_text('[http]\nbind = "10.1.2.3:8099"\n')  # non-loopback without a token: loopback
    b = safemode.bind_of(st)
    assert (b.host, b.port, b.tokens) == ("127.0.0.1", 8099, ()) and "without a token" in b.note
    st.write_text('[http\nbind = "0.0.0.0:8099"\ntoken = "x"\n')  # does not parse: loopback only
    b = safemode.bind_of(st)
    assert b.host == "127.0.0.1" and b.tokens == () and "does not parse" in b.note


def test_safe_mode_page_asks_the_token_and_redacts_its_errors(tmp_path: Path) -> None:
    from helpers.line_parts import free_port

    port = free_port()
    sm = safemode.SafeMode(tmp_path / "station.toml", [f"sources[0].spec: cannot open {SPEC}"], lambda: None,
                           lambda text: None, tokens=("engineer-token-1234",))
    sm.serve("127.0.0.1", port)

    def get(path: str, token: str | None = None) -> tuple[int, str]:
        req = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    try:
        assert get("/")[0] == 401 and get("/", "wrong")[0] == 401
        code, page = get("/", "engineer-token-1234")
        assert code == 200 and "admin:***@10.0.0.5" in page and "s3cretPW" not in page
        code, text = get("/healthz")
        assert code == 503 and text == "safe mode\n", "a monitor sees 503, not the errors"
        code, text = get("/healthz", "engineer-token-1234")
        assert code == 503 and "admin:***@10.0.0.5" in text and "s3cretPW" not in text
    finally:
        sm.close()


# --- 3. the systemd unit -----------------------------------------------------------------------------------------

def test_unit_runs_as_its_own_user_in_a_sandbox(tmp_path: Path) -> None:
    folder = tmp_path / "my line 100%"
    folder.mkdir()
    exe = tmp_path / "bin dir" / "edge-stpm"
    exe.parent.mkdir()
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    text = unit_text(folder / "station.toml", str(exe), writable=[tmp_path / "out"], bind_low_port=False)
    lines = text.splitlines()
    assert "User=edge-stpm" in lines and not any(line.startswith("User=root") for line in lines)
    for want in ("NoNewPrivileges=yes", "ProtectSystem=strict", "PrivateTmp=yes", "ProtectHome=read-only",
                 "ProtectKernelTunables=yes", "ProtectKernelModules=yes", "ProtectControlGroups=yes",
                 "RestrictSUIDSGID=yes", "LockPersonality=yes", "RestrictRealtime=yes",
                 "SystemCallArchitectures=native", "CapabilityBoundingSet=", "AmbientCapabilities=",
                 "SupplementaryGroups=video", "StateDirectory=edge-stpm", "Type=notify", f"WatchdogSec=30"):
        assert want in lines, want
    assert "PrivateDevices=yes" not in lines and "ProtectClock=yes" not in lines  # cameras and the GPU are devices
    esc = str(folder).replace("%", "%%")
    assert f'ExecStart="{str(exe)}" run --config "{esc}/station.toml" --headless --safe-mode' in lines
    assert f'ReadWritePaths="{esc}" -{tmp_path / "out"}' in lines
    low = unit_text(folder / "station.toml", str(exe), user="inspect", writable=[], bind_low_port=True).splitlines()
    assert "User=inspect" in low and "CapabilityBoundingSet=CAP_NET_BIND_SERVICE" in low
    assert "AmbientCapabilities=CAP_NET_BIND_SERVICE" in low
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        return
    unit = tmp_path / "edge-stpm.service"
    unit.write_text(text)
    res = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    said = [line for line in (res.stdout + res.stderr).splitlines() if "edge-stpm.service" in line]
    assert res.returncode == 0 and not said, res.stdout + res.stderr


def test_unit_reads_output_folders_and_low_ports_from_the_station_file(tmp_path: Path) -> None:
    from edge_stpm.runtime.station.service import station_needs

    (tmp_path / "m.onnx").write_bytes(b"x")
    st = tmp_path / "station.toml"
    st.write_text('[[recipes]]\nname = "a"\nindex = 0\nmodel = "m.onnx"\n[history]\ndb = "/data/rec/h.db"\n'
                  '[modbus]\nbind = "0.0.0.0:502"\n')
    paths, low = station_needs(st)
    assert Path("/data/rec") in paths and low
    text = unit_text(st, "/bin/true")
    assert "-/data/rec" in text and "CapabilityBoundingSet=CAP_NET_BIND_SERVICE" in text.splitlines()


# --- 4. atomic writes --------------------------------------------------------------------------------------------

def test_atomic_write_fsyncs_the_folder_after_the_rename(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        calls.append("fsync dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync file")
        real_fsync(fd)

    def replace(a: object, b: object) -> None:
        calls.append("rename")
        real_replace(a, b)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    files.write_text(tmp_path / "a.json", "{}\n")
    assert calls == ["fsync file", "rename", "fsync dir"], calls
    assert (tmp_path / "a.json").read_text() == "{}\n"


def test_atomic_write_never_changes_the_umask(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mask = os.umask(0o022)
    try:
        def no_umask(*_: object) -> int:
            raise AssertionError("os.umask called during a write: process-wide, it races with other threads")

        monkeypatch.setattr(os, "umask", no_umask)
        out = files.write_bytes(tmp_path / "b.bin", b"x")
        assert stat.S_IMODE(out.stat().st_mode) == 0o644  # what any new file gets under umask 022
        assert files.TEMP_NAME.match(".b.bin.0123abcd.tmp.bin") and not list(tmp_path.glob(".*tmp*"))
    finally:
        monkeypatch.undo()
        os.umask(mask)


# --- 5. failure paths of the record and the outbox ------------------------------------------------------------------

class FailFirst:
    """Wraps a write: the first ``n`` calls raise a disk I/O error (what a full or failing disk gives)."""

    def __init__(self, write, n: int) -> None:
        self.write, self.n, self.calls = write, n, 0

    def __call__(self, rows: list) -> None:
        self.calls += 1
        if self.calls <= self.n:
            raise sqlite3.OperationalError("disk I/O error")
        self.write(rows)


class FlakyConnection:
    """The record's SQLite connection whose first INSERT fails as a failing disk does (the rest passes through)."""

    def __init__(self, con: sqlite3.Connection) -> None:
        self.con, self.failed = con, False

    def executemany(self, sql: str, rows: object) -> object:
        if sql.startswith("INSERT") and not self.failed:
            self.failed = True
            raise sqlite3.OperationalError("disk I/O error")
        return self.con.executemany(sql, rows)  # type: ignore[arg-type]

    def __enter__(self) -> sqlite3.Connection:
        return self.con.__enter__()

    def __exit__(self, *exc: object) -> object:
        return self.con.__exit__(*exc)  # type: ignore[arg-type]

    def __getattr__(self, name: str) -> object:
        return getattr(self.con, name)


def test_record_batch_that_fails_once_is_retried_not_lost(tmp_path: Path) -> None:
    said: list[str] = []
    rec = RecordSink(tmp_path / "h.db", "sha")
    rec.open()
    real = rec.con
    rec.con = FlakyConnection(real)  # type: ignore[assignment]
    runner = SinkRunner(rec, said.append).start()
    for i in range(5):
        runner.offer(_result(i))
    runner.close()
    assert rec.con is None and real is not None and said == [], said
    assert [r["frame"] for r in query(tmp_path / "h.db")] == list(range(5)), "the failed batch was written again"
    assert runner.stats.failed == 0 and runner.error is None


def test_record_kept_in_memory_while_failing_and_drops_said(tmp_path: Path) -> None:
    said: list[str] = []
    rec = RecordSink(tmp_path / "h.db", "sha", log=said.append, keep_in_memory=4)
    rec.retry.backoff_s = 0.001
    rec.open()
    rec.retry.write_rows = FailFirst(rec.retry.write_rows, 4)  # the first batch's 3 tries and the next batch fail
    with pytest.raises(WriteFailed, match="3 results kept in memory"):
        rec.take_batch([_result(i) for i in range(3)])
    with pytest.raises(WriteFailed, match=r"4 results kept in memory .*1 dropped in all"):
        rec.take_batch([_result(i) for i in range(3, 5)])
    assert rec.gauges()["record_lost"][1] == 1 and rec.gauges()["record_pending"][1] == 4
    assert any("1 results dropped" in s for s in said), said
    rec.take_batch([_result(5)])  # the disk is back: what was kept goes in first, in order
    assert [r["frame"] for r in query(tmp_path / "h.db")] == [1, 2, 3, 4, 5]
    assert any("written again" in s for s in said), said
    rec.close()


def test_outbox_write_that_fails_is_retried_kept_and_said(tmp_path: Path) -> None:
    said: list[str] = []
    sink = MqttSink("mqtt://127.0.0.1:1", "line/{source}", tmp_path / "o.db", "sha", log=said.append)
    sink.outbox = box = Outbox(tmp_path / "o.db", 100)
    put = FailFirst(box.put_many, 1)
    box.put_many = put  # type: ignore[method-assign]
    sink.take_batch([_result(0)])  # the outbox write failed once: retried at once, nothing raised, nothing lost
    sink.retry.backoff_s = 0.001
    put.n, put.calls = 3, 0
    with pytest.raises(WriteFailed, match="1 results kept in memory"):
        sink.take_batch([_result(1)])
    assert sink.gauges()["mqtt_outbox_pending"][1] == 1
    sink.take_batch([_result(2)])
    assert [json.loads(p)["frame"] for _, _, p in box.head(10)] == [0, 1, 2], "in order, none lost"
    put.n, put.calls = 100, 0
    with pytest.raises(WriteFailed):
        sink.take_batch([_result(3)])
    with pytest.raises(WriteFailed, match="1 results dropped"):
        sink.retry.flush()  # closing while the outbox still fails: dropped, counted, said
    assert sink.gauges()["mqtt_outbox_lost"][1] == 1 and any("1 results dropped" in s for s in said), said
    box.close()


# --- 6. retention: audit rows never evict inspections -----------------------------------------------------------------

def test_retention_by_size_trims_an_audit_flood_before_inspections(tmp_path: Path) -> None:
    from edge_stpm.runtime.station.audit import Audit

    rec = RecordSink(tmp_path / "h.db", "sha", max_mb=1.0)
    rec.open()
    rec.take_batch([_result(i) for i in range(300)])
    audit = Audit(tmp_path / "h.db")
    con = audit.con
    assert con is not None
    with con:  # three real changes, then a flood of refused logins: ~5 MB of audit rows
        con.executemany("INSERT INTO audit (time, time_iso, who, action, outcome) VALUES (?, '', 'eng', 'deploy', "
                        "'ok')", [(time.time(),)] * 3)
        con.executemany("INSERT INTO audit (time, time_iso, who, action, outcome, detail) VALUES (?, '', ?, "
                        "'login', 'refused', ?)", [(time.time(), f"10.0.0.{i % 250}", "x" * 400)
                                                   for i in range(12_000)])
    audit.close()
    assert rec.size_mb() > 1.0
    rec.retain()
    assert len(query(tmp_path / "h.db", limit=10_000)) == 300, "every inspection kept"
    n_audit = rec.con.execute("SELECT COUNT(*) FROM audit").fetchone()[0]
    newest = rec.con.execute("SELECT MAX(id) FROM audit").fetchone()[0]
    deploys = rec.con.execute("SELECT COUNT(*) FROM audit WHERE action = 'deploy'").fetchone()[0]
    assert 0 < n_audit < 12_003 and newest == 12_003, "the oldest audit rows went, the newest stay"
    assert deploys == 3, "refused requests go before real changes"
    assert rec.size_mb() <= 1.0 and rec.audit_deleted == 12_003 - n_audit
    rec.close()
